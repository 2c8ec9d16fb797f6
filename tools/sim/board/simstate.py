# Shared helper of the simulator's stand-in modules (camera, network, machine, esp32).
# Runs inside the MicroPython unix VM. Not a module of the real board: firmware never
# imports it. See docs/simulator.md.
import json
import os
import time

# Exit codes of the VM process (the runner tools/sim/simulate.py acts on them).
EXIT_RESET = 20       # machine.reset()
EXIT_DEEPSLEEP = 21   # machine.deepsleep()
EXIT_WDT = 22         # watchdog timeout
EXIT_SOFT_RESET = 23  # machine.soft_reset()
EXIT_CRASH = 1        # uncaught exception in boot/main (board would sit at the REPL)

# Shared mutable state, as fixed-size lists so that the supervisor thread of power_on.py can
# read it while the firmware thread runs (no dict growth, only slot stores).
# board: [supervised (bool), exit_request (0 = none, else exit code)]
board = [False, 0]
# wdt: [active, deadline (ticks_ms), timeout_ms]
wdt = [False, 0, 0]
# hooks called by the supervisor about every 10 ms (slot 0: camera stats flush)
hooks = [None, None, None]
# led: [duty_u16 of the flash LED on GPIO 4 (machine.PWM)]; the camera lights the scene by it
led = [0]

_dir = None


def sim_dir():
    global _dir
    if _dir is None:
        d = os.getenv("ESP32SIM")
        if not d:
            d = os.getcwd() + "/.sim"
        makedirs(d)
        _dir = d
    return _dir


def path(name):
    return sim_dir() + "/" + name


def makedirs(d):
    parts = d.split("/")
    for i in range(1, len(parts) + 1):
        sub = "/".join(parts[:i])
        if sub:
            try:
                os.mkdir(sub)
            except OSError:
                pass


def exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


def read_json(p, default=None):
    try:
        with open(p) as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return default


try:
    from _thread import get_ident as _ident
except ImportError:
    def _ident():
        return 0


def write_text(p, text):
    # atomic: write a temporary file (one per thread: the supervisor flushes too), then
    # rename it over the target
    tmp = "%s.%d.tmp" % (p, _ident())
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, p)


def write_json(p, obj):
    write_text(p, json.dumps(obj))


class Watched:
    """A JSON control file re-read when it changes (checked at most every `every_ms`).

    mtime has one-second resolution on the unix port, so a file modified within the last
    few seconds is re-read at every check (cheap: control files are tiny)."""

    def __init__(self, name, default, every_ms=100):
        self.p = path(name)
        self.default = default
        self.every = every_ms
        self.data = default
        self.sig = None
        self.checked = None

    def get(self):
        now = time.ticks_ms()
        if self.checked is not None and time.ticks_diff(now, self.checked) < self.every:
            return self.data
        self.checked = now
        try:
            st = os.stat(self.p)
            sig = (st[8], st[6])
        except OSError:
            sig = None
        if sig is None:
            self.data = self.default
        elif sig != self.sig or time.time() - sig[0] < 3:
            d = read_json(self.p, None)
            if isinstance(d, dict):
                self.data = d
        self.sig = sig
        return self.data

    def put(self, key, value):
        # write back one key (e.g. a consumed fault count) so tests can see progress
        d = read_json(self.p, None)
        if not isinstance(d, dict):
            d = {}
        d[key] = value
        write_json(self.p, d)
        self.data = d
        self.checked = None


def record_reset(cause, exit_code, sleep_ms=None):
    """Record the reset cause of the next boot for the runner (file reset_cause)."""
    rec = {"cause": cause, "exit_code": exit_code}
    if sleep_ms is not None:
        rec["sleep_ms"] = sleep_ms
    try:
        write_json(path("reset_cause"), rec)
    except OSError:
        pass


def wdt_expired():
    return wdt[0] and time.ticks_diff(time.ticks_ms(), wdt[1]) > 0


def wdt_fire():
    print("sim: watchdog timeout (%d ms) - reset" % wdt[2])
    record_reset(3, EXIT_WDT)  # machine.WDT_RESET


def run_hooks():
    for h in hooks:
        if h is not None:
            try:
                h()
            except Exception:
                pass


def end_process(code):
    """End the VM with `code`. Under power_on.py the supervisor (main thread) exits the
    process and this call never returns (like a real reset). Without it, SystemExit is
    raised (it is a BaseException: asyncio does not catch it)."""
    run_hooks()
    if board[0]:
        board[1] = code
        while True:
            time.sleep_ms(1000)
    raise SystemExit(code)


# What a soft reset keeps on a board (the chip is not reset): the task watchdog runs on, and
# the REPL stays in its mode (raw for mpremote). The VM ends at a soft reset, so the next one
# takes them from $ESP32SIM/soft_reset.json.
def keep_for_soft_reset(raw=False):
    rec = {"raw": raw}
    if wdt[0]:
        rec["wdt_ms"] = wdt[2]
        rec["wdt_left_ms"] = time.ticks_diff(wdt[1], time.ticks_ms())
        rec["at_ms"] = time.time_ns() // 1000000
    try:
        write_json(path("soft_reset.json"), rec)
    except OSError:
        pass


def restore_after_soft_reset(cause):
    """Re-arm the watchdog a soft reset left running; returns the REPL mode (True: raw).
    Any other reset (`cause` != SOFT_RESET) stops both."""
    p = path("soft_reset.json")
    rec = read_json(p, None) if cause == 5 else None
    try:
        os.remove(p)
    except OSError:
        pass
    if not isinstance(rec, dict):
        return False
    if rec.get("wdt_ms"):
        left = rec["wdt_left_ms"] - (time.time_ns() // 1000000 - rec["at_ms"])
        wdt[2] = rec["wdt_ms"]
        wdt[1] = time.ticks_add(time.ticks_ms(), left)
        wdt[0] = True
    return bool(rec.get("raw"))


def run_script(name, p, g):
    """Run boot/main found at `p` in the namespace `g`, as pyexec_file() does: a .mpy is
    imported, a .py compiled and run as a script."""
    if p.endswith(".mpy"):
        __import__(name)
        return
    with open(p) as f:
        src = f.read()
    g["__file__"] = p
    exec(compile(src, p, "exec"), g)
