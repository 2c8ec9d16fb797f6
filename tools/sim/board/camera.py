# Simulator stand-in for lemariva/micropython-camera-driver's `camera` module (runs inside
# the MicroPython unix VM). The class-API stand-in (tools/sim/board_class/camera.py,
# SIM_CAMERA=class) drives this same simulated sensor, as `ov2640` (a link to this file). Serves pre-rendered JPEG frames from disk at the sensor's
# frame rate. Control files: $ESP32SIM/camera.json (faults, scene) and
# $ESP32SIM/camera_stats.json (counters). See docs/simulator.md.
# camera.json "memory": true reads each frame file once and hands out that same bytes object at
# every capture: no file read, no copy (bench/bench_cost.py counts the firmware's own work; the
# driver's copy of the frame into the heap is counted apart).
import json
import os
import time

import simstate as _s

# pixformat_t (esp32-camera 2.0.x, as built with the driver's v1.21 firmware)
RGB565 = 0
YUV422 = 1
GRAYSCALE = 3
JPEG = 4

# framesize_t
FRAME_96X96 = 0
FRAME_QQVGA = 1
FRAME_QCIF = 2
FRAME_HQVGA = 3
FRAME_240X240 = 4
FRAME_QVGA = 5
FRAME_CIF = 6
FRAME_HVGA = 7
FRAME_VGA = 8
FRAME_SVGA = 9
FRAME_XGA = 10
FRAME_HD = 11
FRAME_SXGA = 12
FRAME_UXGA = 13
FRAME_FHD = 14
FRAME_P_HD = 15
FRAME_P_3MP = 16
FRAME_QXGA = 17
FRAME_QHD = 18
FRAME_WQXGA = 19
FRAME_P_FHD = 20
FRAME_QSXGA = 21

WB_NONE = 0
WB_SUNNY = 1
WB_CLOUDY = 2
WB_OFFICE = 3
WB_HOME = 4

EFFECT_NONE = 0
EFFECT_NEG = 1
EFFECT_BW = 2
EFFECT_RED = 3
EFFECT_GREEN = 4
EFFECT_BLUE = 5
EFFECT_RETRO = 6

XCLK_10MHz = 10000000
XCLK_20MHz = 20000000

PSRAM = 0
DRAM = 1

# index = framesize; the OV2640 tops out at UXGA: larger sizes are forced to UXGA, as
# esp32-camera does ("frame size exceeds the maximum for this sensor").
_SIZES = ((96, 96), (160, 120), (176, 144), (240, 176), (240, 240), (320, 240),
          (400, 296), (480, 320), (640, 480), (800, 600), (1024, 768), (1280, 720),
          (1280, 1024), (1600, 1200))
# GRAYSCALE frames are shipped (raw .gray files) up to QVGA only
_GRAY_MAX = FRAME_QVGA

# state: [initialised, format, framesize, quality, t0_us, last_frame_no, frame_counter]
_st = [False, JPEG, FRAME_VGA, 12, 0, -1, 0]
# sensor settings (no getters on the real driver; kept for the stats file/debugging)
_sensor = {}
# The driver's frame buffer is out of its queue from esp_camera_fb_get() until capture() hands it
# back after copying it (modcamera.c); when the copy raises MemoryError the buffer is never
# handed back, and with fb_count 1 every later capture waits FB_GET_TIMEOUT for it and fails,
# until deinit() frees the buffers.
_leaked = [False]
FB_GET_TIMEOUT_MS = 4000
# counters: captures, inits, deinits, failed ; [4] = dirty, [5] = last write ticks
_stats = [0, 0, 0, 0, False, 0]
_ctl = None
_folder = [None, None]  # [path, sorted file names]


def _control():
    global _ctl
    if _ctl is None:
        _ctl = _s.Watched("camera.json", {})
    return _ctl


def _repo():
    f = __file__
    i = f.rfind("/")
    d = f[:i] if i > 0 else "."
    # <repo>/tools/sim/board/camera.py
    for _ in range(3):
        i = d.rfind("/")
        d = d[:i] if i > 0 else (".." if d in (".", "") else ".")
    return d


def _frames_dir(ctl):
    d = ctl.get("frames") or os.getenv("SIMFRAMES")
    return d or (_repo() + "/sim/frames")


def _write_stats():
    _stats[4] = False
    _stats[5] = time.ticks_ms()
    try:
        _s.write_text(_s.path("camera_stats.json"),
                      '{"captures": %d, "inits": %d, "deinits": %d, "failed": %d}'
                      % (_stats[0], _stats[1], _stats[2], _stats[3]))
    except OSError:
        pass


def _sensor_changed():
    # camera_sensor.json: what reached the sensor's registers (a test reads that a control
    # applied); written when a setting changes, never per frame
    try:
        _s.write_text(_s.path("camera_sensor.json"), json.dumps(_sensor))
    except OSError:
        pass


def _flush_if_dirty():
    # called by power_on.py's supervisor about every 10 ms, and by capture()
    if _stats[4] and time.ticks_diff(time.ticks_ms(), _stats[5]) >= 50:
        _write_stats()


_s.hooks[0] = _flush_if_dirty


def _consume(ctl, data, key):
    """Fault counts: N > 0 -> consume one (written back), -1 -> forever."""
    n = data.get(key, 0)
    if not n:
        return False
    if n > 0:
        ctl.put(key, n - 1)
    return True


def _check_size(size):
    if not isinstance(size, int) or size < 0 or size > FRAME_QSXGA:
        raise ValueError("Image framesize is not valid")
    return size if size <= FRAME_UXGA else FRAME_UXGA


def init(id, *, format=JPEG, framesize=FRAME_VGA, quality=12, d0=5, d1=18, d2=19, d3=21,
         d4=36, d5=39, d6=34, d7=35, vsync=25, href=23, pclk=22, pwdn=32, reset=-1,
         xclk=0, siod=26, sioc=27, xclk_freq=XCLK_10MHz, fb_size=1, fb_location=DRAM):
    if format not in (JPEG, YUV422, GRAYSCALE, RGB565):
        raise ValueError("Image format is not valid")
    size = _check_size(framesize)
    if xclk_freq not in (XCLK_10MHz, XCLK_20MHz):
        raise ValueError("xclk frequency is not valid")
    if format in (YUV422, RGB565):
        raise ValueError("sim: only JPEG and GRAYSCALE frames are simulated")
    if format == GRAYSCALE and size > _GRAY_MAX:
        raise ValueError("sim: GRAYSCALE frames are shipped up to FRAME_QVGA only")
    ctl = _control()
    data = ctl.get()
    _stats[1] += 1
    if _st[0] or _consume(ctl, data, "fail_init"):
        # esp_camera_init() fails when the driver is already initialised
        print("E (sim) camera: Camera Init Failed")
        _write_stats()
        raise OSError("Camera Init Failed")
    _st[0] = True
    _st[1] = format
    _st[2] = size
    _st[3] = quality
    _st[4] = time.ticks_us()
    _st[5] = -1
    _sensor.clear()
    _write_stats()
    return True


def deinit():
    _stats[2] += 1
    _leaked[0] = False
    ok = _st[0]
    _st[0] = False
    _write_stats()
    # esp_camera_deinit() returns ESP_ERR_INVALID_STATE when not initialised
    return ok


def _fps(ctl_data):
    f = ctl_data.get("fps")
    if f:
        return float(f)
    size = _st[2]
    if size <= FRAME_CIF:
        return 50.0
    if size <= FRAME_SVGA:
        return 25.0
    return 12.5


def _wait_frame(fps):
    # The sensor delivers frames at t0 + k*period; capture() waits for the next one.
    period = int(1000000 / fps)
    now = time.ticks_us()
    k = time.ticks_diff(now, _st[4]) // period + 1
    if k <= _st[5]:
        k = _st[5] + 1
    due = time.ticks_add(_st[4], k * period)
    wait = time.ticks_diff(due, now)
    if wait > 0:
        time.sleep_us(wait)
    _st[5] = k
    if k > 1000000:
        # keep the arithmetic in small ints
        _st[4] = due
        _st[5] = 0


def _read(p):
    # one allocation of exactly the frame size, like mp_obj_new_bytes(fb->buf, fb->len)
    try:
        n = os.stat(p)[6]
        with open(p, "rb") as f:
            return f.read(n)
    except OSError:
        return None


def _folder_names(folder):
    if _folder[0] != folder:
        try:
            names = [n for n in os.listdir(folder)
                     if n.lower().endswith(".jpg") or n.lower().endswith(".jpeg")]
        except OSError:
            names = []
        names.sort()
        _folder[0] = folder
        _folder[1] = names
    return _folder[1]


def _folder_frame(folder):
    names = _folder_names(folder)
    if not names:
        return None
    return _read(folder + "/" + names[_st[6] % len(names)])


# "memory" mode: key (the folder, or size/format/scene) -> every frame, read once; a capture
# then allocates nothing
_mem = {}


def _preload(key, paths):
    frames = [_read(p) for p in paths]
    if frames and None not in frames:
        _mem[key] = frames


_counts = {}


def _count(d):
    n = _counts.get(d)
    if n is None:
        try:
            n = len([x for x in os.listdir(d) if x.endswith(".jpg")])
        except OSError:
            return 0
        _counts[d] = n
    return n


def capture():
    if _leaked[0]:
        time.sleep_ms(FB_GET_TIMEOUT_MS)
        print("W (sim) cam_hal: Failed to get frame: timeout")
        print("E (sim) camera: Camera Capture Failed")
        _stats[3] += 1
        _write_stats()
        return False
    try:
        return grab()
    except MemoryError:
        _leaked[0] = True       # mp_obj_new_bytes() raised: esp_camera_fb_return() never ran
        raise


def grab():
    """The sensor's next frame, without modcamera.c's copy: the class stand-in's capture()."""
    if not _st[0]:
        print("E (sim) camera: Camera Capture Failed")
        _stats[3] += 1
        _stats[4] = True
        return False
    ctl = _control()
    data = ctl.get()
    _wait_frame(_fps(data))
    return _capture(ctl, data)


def _capture(ctl, data):
    buf = None
    if _consume(ctl, data, "fail_capture"):
        # a real failed esp_camera_fb_get() blocks until its timeout (up to 4 s)
        ms = data.get("fail_delay_ms", 0)
        if ms:
            time.sleep_ms(int(ms))
    else:
        folder = data.get("folder")
        if _s.led[0] and data.get("lit"):
            folder = data["lit"]    # the flash LED (GPIO 4) is lit: the scene as it lights it
        folder = folder if _st[1] == JPEG else None
        motion = data.get("motion")
        key = folder or _st[2] * 16 + _st[1] * 2 + (1 if motion else 0)
        frames = _mem.get(key) if data.get("memory") else None
        if frames:
            buf = frames[_st[6] % len(frames)]
        elif folder:
            buf = _folder_frame(folder)
            if data.get("memory"):
                _preload(key, [folder + "/" + n for n in _folder_names(folder)])
        else:
            w, h = _SIZES[_st[2]]
            d = "%s/%dx%d/%s" % (_frames_dir(data), w, h, "motion" if motion else "still")
            n = _count(d)
            if n:
                ext = "jpg" if _st[1] == JPEG else "gray"
                buf = _read("%s/%04d.%s" % (d, _st[6] % n, ext))
                if data.get("memory"):
                    _preload(key, ["%s/%04d.%s" % (d, i, ext) for i in range(n)])
        _st[6] += 1
    if buf is None:
        print("E (sim) camera: Camera Capture Failed")
        _stats[3] += 1
        _write_stats()
        return False
    _stats[0] += 1
    _stats[4] = True
    _flush_if_dirty()
    return buf


def _int(v):
    # mp_obj_get_int(): ints and bools only
    if isinstance(v, int):
        return int(v)
    raise TypeError("can't convert %s to int" % type(v).__name__)


def _setter(name, val):
    if not _st[0]:
        return False
    # out-of-range values are refused by the sensor driver and ignored (None returned)
    _sensor[name] = _int(val)
    _sensor_changed()
    return None


def framesize(what):
    if not _st[0]:
        print("E (sim) camera: Framesize Failed")
        return False
    size = _check_size(_int(what))
    if _st[1] == GRAYSCALE and size > _GRAY_MAX:
        # the sim has no GRAYSCALE frames above QVGA: captures would fail
        raise ValueError("sim: GRAYSCALE frames are shipped up to FRAME_QVGA only")
    _sensor["framesize"] = size
    _sensor_changed()
    if size != _st[2]:
        # the sensor restarts its frame timing on a mode change
        _st[2] = size
        _st[4] = time.ticks_us()
        _st[5] = -1
    return None


def quality(what):
    # The sim serves frames pre-encoded at camera quality ~12; quality is recorded only.
    if not _st[0]:
        return False
    _st[3] = _sensor["quality"] = _int(what)
    _sensor_changed()
    return None


def flip(direction):
    return _setter("vflip", direction)


def mirror(direction):
    return _setter("hmirror", direction)


def contrast(what):
    return _setter("contrast", what)


def brightness(what):
    return _setter("brightness", what)


def saturation(what):
    return _setter("saturation", what)


def speffect(what):
    return _setter("special_effect", what)


def whitebalance(what):
    return _setter("wb_mode", what)
