# VM entry point of the simulator: behaves like an ESP32 boot. Runs `boot` then `main`
# (found on MICROPYPATH, cwd = the simulated flash) in a firmware thread, while the main
# thread supervises: it ends the VM with the watchdog exit code when the WDT is not fed
# (even if the firmware is hung in `while True: pass`), and on machine.reset()/
# deepsleep()/soft_reset(). With a serial port (env ESP32SIM_REPL, set by simulate.py) the roles
# swap and the REPL follows main, as on the board: tools/sim/board/repl.py. See docs/simulator.md.
import _thread
import os
import sys
import time

import simstate as _s
import mpy_api

# SIM_MICROPYTHON: the API set of that release (docs/simulator.md, "MicroPython versions")
if mpy_api.problem():
    print("sim: " + mpy_api.problem())
    sys.exit(2)

# SIM_CAMERA=class: micropython-camera-API's `camera` (tools/sim/board_class) instead of
# micropython-camera-driver's beside this script (the VM puts the script's folder first).
if os.getenv("SIM_CAMERA") == "class":
    sys.path.insert(0, __file__.rsplit("/", 2)[0] + "/board_class")

_s.board[0] = True
_s.sim_dir()

# The board's wall clock (2000-01-01 after a power-on, ESP32 epoch) for every later `import time`
import board_time

sys.modules["time"] = board_time
mpy_api.install()

# A soft reset keeps the task watchdog running and the REPL's mode
_raw = _s.restore_after_soft_reset(int(os.getenv("ESP32SIM_RESET_CAUSE") or 1))

# firmware thread outcome: [finished, exit code]
_done = [False, 0]


def _find(name):
    for d in sys.path:
        for ext in (".py", ".mpy"):
            p = (d + "/" if d else "") + name + ext
            if _s.exists(p):
                return p
    return None


def _firmware():
    code = 0
    # boot.py and main.py run as scripts in one __main__ namespace, as pyexec_file() does
    g = {"__name__": "__main__"}
    try:
        for name in ("boot", "main"):
            p = _find(name)
            if p is None:
                continue  # a missing boot.py/main.py is skipped, like on the board
            _s.run_script(name, p, g)
    except SystemExit as e:
        code = e.args[0] if e.args else 0
        if code is None:
            code = 0
        elif not isinstance(code, int):
            print(code)
            code = 1
    except BaseException as e:
        sys.print_exception(e)
        code = _s.EXIT_CRASH
    _done[1] = code
    _done[0] = True


def _supervise():
    reported = False
    while True:
        time.sleep_ms(10)
        _s.run_hooks()
        if _s.board[1]:
            return _s.board[1]
        if _s.wdt_expired():
            _s.wdt_fire()
            return _s.EXIT_WDT
        if _done[0]:
            if not _s.wdt[0]:
                return _done[1]
            if not reported:
                # a real board would sit at the REPL until the watchdog fires
                print("sim: firmware ended (code %d), waiting for the watchdog" % _done[1])
                reported = True


if os.getenv("ESP32SIM_REPL"):
    # a serial port (simulate.py's pty): boot, main and the REPL in this thread (tools/sim/board/repl.py)
    import repl

    repl.power_on(_find, _supervise, _raw)

_thread.stack_size(256 * 1024)
_thread.start_new_thread(_firmware, ())
_code = _supervise()
_s.run_hooks()
if _code == _s.EXIT_SOFT_RESET:
    _s.keep_for_soft_reset()
sys.exit(_code)
