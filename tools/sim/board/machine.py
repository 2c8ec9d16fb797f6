# Simulator stand-in for the ESP32 port's `machine` module (runs inside the MicroPython
# unix VM; shadows the unix port's own `machine`). See docs/simulator.md.
import os
import time

import simstate as _s
from mpy_api import version as _v   # SIM_MICROPYTHON: this release's API set

# Reset causes, ESP32 port values (ports/esp32/modmachine.c)
PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

# wake reasons (machine.wake_reason())
SLEEP = 2
DEEPSLEEP = 4
PIN_WAKE = 2
EXT0_WAKE = 2
EXT1_WAKE = 3
TIMER_WAKE = 4
TOUCHPAD_WAKE = 5
ULP_WAKE = 6

_cause = None
_freq = [160000000]


def reset_cause():
    """Cause of this boot: passed by the runner in env ESP32SIM_RESET_CAUSE
    (PWRON_RESET when absent)."""
    global _cause
    if _cause is None:
        v = os.getenv("ESP32SIM_RESET_CAUSE")
        try:
            _cause = int(v) if v else PWRON_RESET
        except ValueError:
            _cause = PWRON_RESET
    return _cause


def wake_reason():
    return TIMER_WAKE if reset_cause() == DEEPSLEEP_RESET else 0


def reset():
    print("sim: machine.reset()")
    _s.record_reset(HARD_RESET, _s.EXIT_RESET)
    _s.end_process(_s.EXIT_RESET)


def soft_reset():
    print("sim: machine.soft_reset()")
    _s.record_reset(SOFT_RESET, _s.EXIT_SOFT_RESET)
    _s.end_process(_s.EXIT_SOFT_RESET)


def deepsleep(time_ms=None):
    ms = -1 if time_ms is None else int(time_ms)
    print("sim: machine.deepsleep(%s)" % ("" if time_ms is None else ms))
    _s.record_reset(DEEPSLEEP_RESET, _s.EXIT_DEEPSLEEP, ms)
    _s.end_process(_s.EXIT_DEEPSLEEP)


def lightsleep(time_ms=None):
    # The CPU halts: nothing runs. The task watchdog does not run either, so its deadline
    # moves with the sleep.
    ms = 1000 if time_ms is None else int(time_ms)
    if ms > 0:
        time.sleep_ms(ms)
        if _s.wdt[0]:
            _s.wdt[1] = time.ticks_add(_s.wdt[1], ms)


sleep = lightsleep


def idle():
    time.sleep_ms(1)


def freq(hz=None):
    if hz is None:
        return _freq[0]
    if hz not in (20000000, 40000000, 80000000, 160000000, 240000000):
        raise ValueError("frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz")
    _freq[0] = hz


def unique_id():
    # the STA MAC address, as on the ESP32
    import network
    return network._mac(0)


def disable_irq():
    return 0


def enable_irq(state=0):
    pass


def time_pulse_us(pin, pulse_level, timeout_us=1000000):
    return -2


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1
    IRQ_RISING = 1
    IRQ_FALLING = 2
    WAKE_LOW = 4
    WAKE_HIGH = 5
    DRIVE_0 = 0
    DRIVE_1 = 1
    DRIVE_2 = 2
    DRIVE_3 = 3

    _valid = (0, 1, 2, 3, 4, 5, 12, 13, 14, 15, 16, 17, 18, 19, 21, 22, 23, 25, 26, 27,
              32, 33, 34, 35, 36, 37, 38, 39)

    def __init__(self, id, mode=-1, pull=-1, *, value=None, drive=None, hold=None):
        if id not in Pin._valid:
            raise ValueError("invalid pin")
        self._id = id
        self._mode = mode
        self._val = 0
        self.init(mode, pull, value=value)

    def init(self, mode=-1, pull=-1, *, value=None, drive=None, hold=None):
        if mode != -1:
            if mode in (Pin.OUT, Pin.OPEN_DRAIN) and self._id >= 34:
                raise ValueError("pin can only be input")
            self._mode = mode
        if value is not None:
            self._set(value)

    def _set(self, v):
        v = 1 if v else 0
        if v != self._val:
            self._val = v
            if self._id == 4:
                # the flash LED of the ESP32-CAM
                print("sim: flash LED %s" % ("on" if v else "off"))
            try:
                _s.write_text(_s.path("pin%d" % self._id), str(v))
            except OSError:
                pass

    def value(self, v=None):
        if v is None:
            if self._mode == Pin.IN:
                # an input follows the simulator's pins.json ({"13": 1}: the PIR fires)
                pins = _s.read_json(_s.path("pins.json"), None)
                if isinstance(pins, dict) and str(self._id) in pins:
                    return 1 if pins[str(self._id)] else 0
            return self._val
        self._set(v)

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self._set(1)

    def off(self):
        self._set(0)

    def irq(self, handler=None, trigger=3, *, wake=None, hard=False):
        return None

    def __repr__(self):
        return "Pin(%d)" % self._id


class Signal:
    def __init__(self, pin, invert=False):
        self._pin = pin
        self._inv = invert

    def value(self, v=None):
        if v is None:
            return self._pin.value() ^ (1 if self._inv else 0)
        self._pin.value((1 if v else 0) ^ (1 if self._inv else 0))

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class PWM:
    """The ESP32 port's LEDC PWM (ports/esp32/machine_pwm.c), as strict as on 1.21: only one of
    duty/duty_u16/duty_ns, duty_u16 0..65535, freq 1 Hz..40 MHz, no PWM on the input-only pins
    34..39, RuntimeError once deinit()ed; without a duty the first init runs at 50 %. The duty
    is kept at the timer's resolution (13 bits at 5 kHz: duty_u16() reads back a multiple of 8).
    State file $ESP32SIM/pwm<N>.json: freq, duty_u16, "lit" (how often it went from dark to lit),
    "lit_ms" (total time lit) and "log" ([ticks_ms, duty_u16] of the last changes); GPIO 4
    (the ESP32-CAM's flash LED) also lights the simulated scene (camera.json "lit")."""

    def __init__(self, dest, *, freq=-1, duty=-1, duty_u16=-1, duty_ns=-1, invert=False):
        pin = dest._id if isinstance(dest, Pin) else dest
        if not isinstance(pin, int) or pin not in Pin._valid:
            raise ValueError("invalid pin")
        self._pin = pin
        self._active = False
        self._freq = 5000
        self._duty = 0
        self._res = 13
        self._st = {"freq": 0, "duty_u16": 0, "lit": 0, "lit_ms": 0, "log": []}
        self._on = None
        self.init(freq=freq, duty=duty, duty_u16=duty_u16, duty_ns=duty_ns)

    def init(self, *, freq=-1, duty=-1, duty_u16=-1, duty_ns=-1, invert=False):
        if (duty != -1) + (duty_u16 != -1) + (duty_ns != -1) > 1:
            raise ValueError("only one of parameters 'duty', 'duty_u16' or 'duty_ns' is allowed")
        if freq == -1:
            freq = self._freq
        if not 0 < freq <= 40000000:
            raise ValueError("frequency must be from 1Hz to 40MHz")
        if self._pin >= 34:
            raise ValueError("PWM not supported on Pin(%d)" % self._pin)
        first = not self._active
        self._active = True
        self.freq(freq)
        if duty_u16 != -1:
            self.duty_u16(duty_u16)
        elif duty_ns != -1:
            self.duty_ns(duty_ns)
        elif duty != -1:
            self.duty(duty)
        elif first:
            self.duty_u16(32768)

    def _check(self):
        if not self._active:
            raise RuntimeError("PWM inactive")

    def freq(self, value=None):
        self._check()
        if value is None:
            return self._freq
        if not 0 < value <= 40000000:
            raise ValueError("frequency must be from 1Hz to 40MHz")
        self._freq = value
        res = 0
        i = 80000000 // value
        while i > 1:
            i >>= 1
            res += 1
        self._res = max(1, min(16, res))
        self._set(self._duty)

    def duty_u16(self, value=None):
        self._check()
        if value is None:
            return (self._duty >> (16 - self._res)) << (16 - self._res)
        if not 0 <= value <= 65535:
            raise ValueError("duty_u16 must be from 0 to 65535")
        self._set(value)

    def duty(self, value=None):
        if value is None:
            return self.duty_u16() >> 6
        if not 0 <= value <= 1023:
            raise ValueError("duty must be from 0 to 1023")
        self.duty_u16(value << 6)

    def duty_ns(self, value=None):
        if value is None:
            return self.duty_u16() * 1000000000 // (self._freq * 65535)
        self._check()
        top = 1000000000 // self._freq
        if not 0 <= value <= top:
            raise ValueError("duty_ns must be from 0 to %d ns" % top)
        self.duty_u16(value * 65535 // top)

    def deinit(self):
        if self._active:
            self._set(0)
            self._active = False

    def _set(self, duty):
        level = (duty >> (16 - self._res)) << (16 - self._res)
        old = self._st["duty_u16"]
        self._duty = duty
        if level == old and self._st["freq"] == self._freq:
            return
        st = self._st
        now = time.ticks_ms()
        if level and not old:
            st["lit"] += 1
            self._on = now
        elif old and not level and self._on is not None:
            st["lit_ms"] += time.ticks_diff(now, self._on)
            self._on = None
        st["freq"] = self._freq
        st["duty_u16"] = level
        st["log"] = st["log"][-31:] + [[now, level]]
        if self._pin == 4:
            _s.led[0] = level
        try:
            _s.write_json(_s.path("pwm%d.json" % self._pin), st)
        except OSError:
            pass


class WDT:
    """Task watchdog: cannot be stopped once started. When not fed within `timeout` ms the
    VM ends with exit code 22 and the next boot sees WDT_RESET."""

    def __init__(self, id=0, timeout=5000):
        if id != 0:
            raise ValueError()
        if timeout <= 0:
            raise ValueError("WDT timeout too short")
        _s.wdt[2] = timeout
        _s.wdt[1] = time.ticks_add(time.ticks_ms(), timeout)
        if not _s.wdt[0]:
            _s.wdt[0] = True
            if not _s.board[0]:
                _start_watchdog_thread()

    def feed(self):
        _s.wdt[1] = time.ticks_add(time.ticks_ms(), _s.wdt[2])


def _start_watchdog_thread():
    # Without power_on.py's supervisor (VM started on a script directly), a helper thread
    # ends the process with SIGKILL (the main thread may be stuck in `while True: pass`).
    # The exit code is then -9, but the reset_cause file records exit_code 22.
    import _thread

    def watch():
        while True:
            time.sleep_ms(10)
            if _s.wdt_expired():
                _s.wdt_fire()
                os.system("kill -9 $PPID")
                time.sleep_ms(1000)

    _thread.start_new_thread(watch, ())


class Timer:
    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, id=0, **kw):
        self._id = id
        if kw:
            self.init(**kw)

    def init(self, *, mode=1, period=-1, freq=-1, callback=None):
        raise OSError("sim: machine.Timer is not simulated (use asyncio)")

    def deinit(self):
        pass


class RTC:
    _mem = [b""]

    # the wall clock lives in board_time (the `time` the firmware sees): 2000-01-01 after a
    # power-on, kept through resets and deep sleep
    def datetime(self, dt=None):
        import board_time
        return board_time._rtc_datetime(dt)

    def init(self, dt):
        import board_time
        board_time._rtc_datetime(dt)

    def memory(self, data=None):
        if data is None:
            return RTC._mem[0]
        RTC._mem[0] = bytes(data)


# what a block transfer of machine.SDCard answers: 0/-EIO from 1.29, True/False before
_DONE, _FAILED = (0, -5) if _v >= (1, 29) else (True, False)


class SDCard:
    """The ESP32 port's SD/MMC host as a block device over an image file, $ESP32SIM/sdcard.img
    (FAT-formatted by the test or by the firmware with os.VfsFat.mkfs). Control file
    $ESP32SIM/sdcard.json: "present" (default: the image exists; false = no card / pulled out),
    "image" (another file name), "fail_writes"/"fail_reads" (N > 0: that many transfers fail,
    -1: all), "write_kbps" (throughput of the card, 0 = as fast as the PC).
    Like the real driver, the constructor only sets up the host: a missing card shows at the
    first block operation (False) or at ioctl(INIT) (-1)."""

    def __init__(self, slot=1, width=1, cd=None, wp=None, sck=None, miso=None, mosi=None,
                 cs=None, freq=20000000):
        if slot not in (0, 1, 2, 3):
            raise ValueError("slot number must be between 0 and 3 inclusive")
        if width not in (1, 4, 8):
            raise ValueError("width must be 1, 4 or 8")
        self._ctl = _s.Watched("sdcard.json", {})
        self._f = None
        self._name = None
        self._blocks = 0
        self._init = False     # sdcard_ensure_card_init() has succeeded (until DEINIT)

    def _card(self):
        d = self._ctl.get()
        name = d.get("image", "sdcard.img")
        p = _s.path(name)
        present = d.get("present")
        if present is None:
            present = _s.exists(p)
        if not present or not _s.exists(p):
            self._close()
            raise OSError(5)   # EIO: the host gets no answer from the slot
        if self._f is None or self._name != name:
            self._close()
            self._f = open(p, "r+b")
            self._name = name
            self._blocks = os.stat(p)[6] // 512
        return d

    def _close(self):
        if self._f is not None:
            try:
                self._f.close()
            except OSError:
                pass
            self._f = None

    def _fault(self, d, key):
        n = d.get(key, 0)
        if not n:
            return False
        if n > 0:
            self._ctl.put(key, n - 1)
        return True

    # As machine_sdcard.c in 1.29: a transfer answers 0, or -EIO when it failed; False when
    # the card cannot even be initialised (VfsFat reads that False as 0). Before 1.29 (until
    # 792304a22d) a transfer answers True or False (SIM_MICROPYTHON; the VfsFat of those releases
    # is modelled in board_vfs). Nothing raises but a wrong buffer type, and there is no offset
    # argument: the SD host is a plain block device.
    def readblocks(self, block_num, buf):
        return self._xfer(block_num, memoryview(buf), "fail_reads", False)

    def writeblocks(self, block_num, buf):
        return self._xfer(block_num, memoryview(buf), "fail_writes", True)

    def _xfer(self, block_num, buf, fault, write):
        try:
            d = self._card()
        except OSError:
            return _FAILED if self._init else False
        self._init = True
        n = len(buf) // 512
        if self._fault(d, fault) or block_num + n > self._blocks:
            return _FAILED
        if write:
            kbps = d.get("write_kbps", 0)
            if kbps:
                time.sleep_us(n * 512 * 1000000 // (kbps * 1024))   # the bus and the card's flash
        self._f.seek(block_num * 512)
        if write:
            self._f.write(buf[:n * 512])
        else:
            self._f.readinto(buf[:n * 512])
        return _DONE

    def ioctl(self, op, arg):
        if op == 1:           # INIT
            try:
                self._card()
            except OSError:
                return -1
            self._init = True
            return 0
        if op == 2:           # DEINIT
            self._init = False
            self._close()
            return 0
        if op == 3:           # SYNC
            if self._f is not None:
                self._f.flush()
            return 0
        if op == 4:           # BLOCK_COUNT
            try:
                self._card()
            except OSError:
                return -1
            return self._blocks
        if op == 5:           # BLOCK_SIZE
            return 512
        return 0

    def info(self):
        self._card()
        return (self._blocks * 512, 512)

    def deinit(self):
        self._close()
