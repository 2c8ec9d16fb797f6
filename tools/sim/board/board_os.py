# The board's `os` in the simulator (runs inside the MicroPython unix VM; mpy_api.install() puts
# it in sys.modules for SIM_MICROPYTHON < 1.29, repl.py in REPL mode). Not a board module: the
# firmware never imports it by this name.
# - The ESP32 port's VFS (LittleFS or FAT) resolves the path "" to the current directory, the unix
#   port's POSIX VFS answers ENOENT; mpremote relies on the board's answer: `fs cp -r dir :` stats
#   "" to learn that ":" is a directory (else it copies the files of dir, not dir, into the root).
# - Before 1.29, os.VfsFat reads a block device's answers as that release did (board_vfs).
#   os.mount/umount/VfsFat/VfsLfs2 are in every supported release (the only place before 1.23).
import os as _os

import mpy_api

for _k in dir(_os):
    if _k[0] != "_":
        globals()[_k] = getattr(_os, _k)

if mpy_api.version is not None and mpy_api.version < (1, 29):
    import board_vfs

    VfsFat = board_vfs.VfsFat


def stat(path):
    return _os.stat(path or ".")


def ilistdir(path="."):
    return _os.ilistdir(path or ".")


def listdir(path="."):
    return _os.listdir(path or ".")
