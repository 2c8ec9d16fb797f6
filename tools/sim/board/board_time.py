# The ESP32 port's `time` module as the firmware sees it on a board: power_on.py puts it in
# sys.modules['time'] before boot.py runs, so every `import time` (firmware, microdot, asyncio)
# gets it. Ticks and sleeps are the VM's own functions, untouched; only the wall clock differs:
# - the epoch is 2000-01-01 (ports/esp32: MICROPY_EPOCH_IS_2000 in 1.21, 1.24 and 1.29; the
#   unix port counts from 1970), and time.time() is an int;
# - after a power-on the RTC reads 2000-01-01 00:00:00 and counts from there until
#   machine.RTC().datetime(...) / init(...) sets it (what NTP code does);
# - the RTC domain keeps counting through machine.reset(), the watchdog, soft reset and deep
#   sleep (the offset lives in $ESP32SIM/rtc.json); only a power cut (reset cause 1, a fresh
#   `simulate.py`, Board.power_cycle()) starts it at 2000 again;
# - localtime() is gmtime(): the board has no time zone unless the firmware sets one.
# Not a module of the real board: firmware never imports it by this name.
import os
import time as _host

import simstate as _s

# the VM's own clock functions, shared unchanged
sleep = _host.sleep
sleep_ms = _host.sleep_ms
sleep_us = _host.sleep_us
ticks_ms = _host.ticks_ms
ticks_us = _host.ticks_us
ticks_cpu = _host.ticks_cpu
ticks_add = _host.ticks_add
ticks_diff = _host.ticks_diff

_TO_2000 = 946684800      # seconds from 1970-01-01 to 2000-01-01
_FILE = "rtc.json"
_delta = [None]           # RTC ns since 2000 minus the host's ns since 1970


def _days(y, m, d):
    """Days from 2000-01-01 to y-m-d (proleptic Gregorian, as timeutils)."""
    if m <= 2:
        y -= 1
        m += 12
    return 365 * y + y // 4 - y // 100 + y // 400 + (153 * (m - 3) + 2) // 5 + d - 730426


def _power_on():
    if _delta[0] is not None:
        return
    cause = os.getenv("ESP32SIM_RESET_CAUSE") or "1"
    if cause != "1":
        d = _s.read_json(_s.path(_FILE))
        if d and isinstance(d.get("delta_ns"), int):
            _delta[0] = d["delta_ns"]
            return
    _set_ns(0)


def _set_ns(rtc_ns):
    _delta[0] = rtc_ns - _host.time_ns()
    _s.write_json(_s.path(_FILE), {"delta_ns": _delta[0]})


def time_ns():
    _power_on()
    return _host.time_ns() + _delta[0]


def time():
    return time_ns() // 1000000000


def gmtime(secs=None):
    if secs is None:
        secs = time()
    t = _host.gmtime(int(secs) + _TO_2000)
    return (t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7])


localtime = gmtime


def mktime(t):
    return ((_days(t[0], t[1], t[2]) * 24 + t[3]) * 60 + t[4]) * 60 + t[5]


def _rtc_datetime(dt=None):
    """machine.RTC().datetime() of the ESP32 port: (y, m, d, weekday, h, mi, s, us) read, or
    set from such a tuple (the weekday is ignored, as the port does)."""
    if dt is None:
        ns = time_ns()
        t = gmtime(ns // 1000000000)
        return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], (ns // 1000) % 1000000)
    if len(dt) != 8:
        raise ValueError("requested length 8 but object has length %d" % len(dt))
    secs = mktime((dt[0], dt[1], dt[2], dt[4], dt[5], dt[6]))
    _set_ns(secs * 1000000000 + int(dt[7]) * 1000)
