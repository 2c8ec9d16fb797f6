"""The board's wall clock: set or not, and times in words.

A board's RTC reads 2000-01-01 after a power-on and keeps counting through resets and deep sleep;
it is right only once NTP (firmware/net/ntp.py) has set it. Until then every time the firmware
shows says "time not set" instead of a date in 2000. time.time() counts from 2000 on the ESP32
and from 1970 on the unix port; `unix()` gives seconds since 1970 on both.
"""
import time

VALID_FROM = 2025          # an earlier year means the clock was never set
NOT_SET = 'time not set'
TO_UNIX = 946684800 if time.gmtime(0)[0] == 2000 else 0   # add to time.time() for 1970 seconds
_boot = [time.time()]      # time.time() when the firmware started, moved with every step of the clock
source = [None]            # the NTP server (time.servers entry) that set the clock, None before


def is_set(t=None):
    """True when `t` (a time.time() value, default now) comes from a set clock."""
    return time.gmtime(int(time.time() if t is None else t))[0] >= VALID_FROM


def unix(t=None):
    """Seconds since 1970 of `t` (default now), None when the clock was not set then."""
    if t is None:
        t = time.time()
    return int(t) + TO_UNIX if is_set(t) else None


def text(t=None):
    """'2026-12-02 03:04:05 UTC', or 'time not set'."""
    if t is None:
        t = time.time()
    if not is_set(t):
        return NOT_SET
    return '%04d-%02d-%02d %02d:%02d:%02d UTC' % time.gmtime(int(t))[:6]


def start():
    """The firmware starts now (uptime 0): the App calls it once its services are made."""
    _boot[0] = time.time()


def uptime_s():
    """Seconds since start(); setting the clock does not make it jump (no ticks wrap either)."""
    return int(time.time() - _boot[0])


def set_unix(rtc, secs, us, why):
    """Set the RTC (machine.RTC()) to `secs` + `us` microseconds since 1970; `why` is kept."""
    before = time.time()
    t = time.gmtime(int(secs) - TO_UNIX)
    rtc.datetime((t[0], t[1], t[2], t[6], t[3], t[4], t[5], us))
    _boot[0] += time.time() - before
    source[0] = why
