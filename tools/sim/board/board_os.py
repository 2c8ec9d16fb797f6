# The board's `os` for the simulator's REPL mode (runs inside the MicroPython unix VM; repl.py puts
# it in sys.modules["os"]). Not a board module: the firmware never imports it by this name.
# The ESP32 port's VFS (LittleFS or FAT) resolves the path "" to the current directory, the unix
# port's POSIX VFS answers ENOENT; mpremote relies on the board's answer: `fs cp -r dir :` stats
# "" to learn that ":" is a directory (else it copies the files of dir, not dir, into the root).
import os as _os

for _k in dir(_os):
    if _k[0] != "_":
        globals()[_k] = getattr(_os, _k)


def stat(path):
    return _os.stat(path or ".")


def ilistdir(path="."):
    return _os.ilistdir(path or ".")


def listdir(path="."):
    return _os.listdir(path or ".")
