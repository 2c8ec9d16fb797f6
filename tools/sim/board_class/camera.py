# Simulator stand-in for cnadler86/micropython-camera-API's `camera` module (the class API:
# Camera, PixelFormat, FrameSize, GrabMode, GainCeiling), driving the same simulated OV2640 as
# the function API's stand-in (tools/sim/board/ov2640.py: frames, faults and control files are
# shared). On the module path before tools/sim/board when the simulator runs with
# SIM_CAMERA=class. Failures as src/modcamera.c has them: a failed init raises OSError(code,
# esp_err name), capture() returns None, any call on a camera that is not initialised raises
# OSError(ENOENT), a setting the sensor refuses raises ValueError("Invalid setting for NAME").
import ov2640 as _s

ENOENT = 2
ESP_ERR_NOT_FOUND = 0x105       # esp_camera_init(): no sensor answered the probe


class PixelFormat:
    RGB565 = 0
    YUV422 = 1
    YUV420 = 2
    GRAYSCALE = 3
    JPEG = 4
    RGB888 = 5
    RAW = 6
    RGB444 = 7
    RGB555 = 8


class FrameSize:
    R96X96 = 0
    QQVGA = 1
    R128x128 = 2
    QCIF = 3
    HQVGA = 4
    R240X240 = 5
    QVGA = 6
    R320X320 = 7
    CIF = 8
    HVGA = 9
    VGA = 10
    SVGA = 11
    XGA = 12
    HD = 13
    SXGA = 14
    UXGA = 15
    FHD = 16
    P_HD = 17
    P_3MP = 18
    QXGA = 19
    QHD = 20
    WQXGA = 21
    P_FHD = 22
    QSXGA = 23


class GrabMode:
    WHEN_EMPTY = 0
    LATEST = 1


class GainCeiling:
    X2 = 0
    X4 = 1
    X8 = 2
    X16 = 3
    X32 = 4
    X64 = 5
    X128 = 6


# FrameSize -> the simulated sensor's size (the OV2640 has no 128x128 or 320x320 mode; larger
# than UXGA is scaled down to UXGA, with a warning on a board)
_SIZE = {0: _s.FRAME_96X96, 1: _s.FRAME_QQVGA, 3: _s.FRAME_QCIF, 4: _s.FRAME_HQVGA,
         5: _s.FRAME_240X240, 6: _s.FRAME_QVGA, 8: _s.FRAME_CIF, 9: _s.FRAME_HVGA,
         10: _s.FRAME_VGA, 11: _s.FRAME_SVGA, 12: _s.FRAME_XGA, 13: _s.FRAME_HD,
         14: _s.FRAME_SXGA, 15: _s.FRAME_UXGA}
# (low, high) the OV2640 driver accepts per setting; None: the OV2640 has no such control (its
# esp32-camera driver installs a setter that always fails)
_RANGE = {'contrast': (-2, 2), 'brightness': (-2, 2), 'saturation': (-2, 2), 'sharpness': None,
          'denoise': None, 'gainceiling': (0, 6), 'colorbar': (0, 1), 'whitebal': (0, 1),
          'gain_ctrl': (0, 1), 'exposure_ctrl': (0, 1), 'hmirror': (0, 1), 'vflip': (0, 1),
          'aec2': (0, 1), 'awb_gain': (0, 1), 'agc_gain': (0, 30), 'aec_value': (0, 1200),
          'special_effect': (0, 6), 'wb_mode': (0, 4), 'ae_level': (-2, 2), 'dcw': (0, 1),
          'bpc': (0, 1), 'wpc': (0, 1), 'raw_gma': (0, 1), 'lenc': (0, 1)}


def _sensor_size(frame_size):
    if frame_size not in _SIZE:
        if isinstance(frame_size, int) and FrameSize.UXGA < frame_size <= FrameSize.QSXGA:
            print("sim: Frame size will be scaled down to maximal frame size supported by the camera sensor")
            return _s.FRAME_UXGA
        raise ValueError("Invalid setting for frame_size")
    return _SIZE[frame_size]


def _driver_quality(q):
    # the API's 0..100 (100 best) -> the driver's 63..0
    return 63 - q * 63 // 100


class Camera:
    def __init__(self, *, data_pins=None, pclk_pin=None, vsync_pin=None, href_pin=None,
                 sda_pin=None, scl_pin=None, xclk_pin=None, xclk_freq=20000000,
                 powerdown_pin=-1, reset_pin=-1, i2c=None, pixel_format=PixelFormat.RGB565,
                 frame_size=FrameSize.QVGA, jpeg_quality=85, fb_count=1,
                 grab_mode=GrabMode.WHEN_EMPTY, init=True):
        if xclk_freq > 40000000:
            raise ValueError("xclk frequency cannot be grather than 40MHz")
        if not 0 <= pixel_format <= PixelFormat.RGB555:
            raise ValueError("Invalid pixel_format")
        if grab_mode not in (GrabMode.WHEN_EMPTY, GrabMode.LATEST):
            raise ValueError("Invalid grab_mode")
        self._format = pixel_format
        self._size = frame_size
        self._quality = jpeg_quality
        self._xclk = xclk_freq
        self._fb_count = 2 if fb_count > 2 else (1 if fb_count < 1 else fb_count)
        self._grab = grab_mode
        self._on = False
        if init:
            self.init()

    def init(self):
        if self._on:
            return
        fmt = {PixelFormat.JPEG: _s.JPEG, PixelFormat.GRAYSCALE: _s.GRAYSCALE}.get(self._format)
        if fmt is None:
            raise ValueError("sim: only JPEG and GRAYSCALE frames are simulated")
        # the sensor runs at the xclk it is given; the simulated one knows 10 and 20 MHz
        xclk = _s.XCLK_20MHz if self._xclk >= 20000000 else _s.XCLK_10MHz
        _s.deinit()
        try:
            _s.init(0, format=fmt, framesize=_sensor_size(self._size),
                    quality=_driver_quality(self._quality), xclk_freq=xclk, fb_location=_s.PSRAM)
        except OSError:
            raise OSError(ESP_ERR_NOT_FOUND, "ESP_ERR_NOT_FOUND")
        self._on = True

    def deinit(self):
        if self._on:
            _s.deinit()
            self._on = False

    def _check(self):
        if not self._on:
            raise OSError(ENOENT)

    def capture(self):
        self._check()
        # A MemoryError here stands for the adapter's bytes(mv) copy (the stand-in's frame is in
        # the GC heap); this driver takes its buffer back at the next capture, so nothing leaks.
        frame = _s.grab()
        if frame is False:
            return None
        return memoryview(frame)

    def free_buffer(self):
        pass

    def frame_available(self):
        self._check()
        return True

    def reconfigure(self, *, frame_size=None, pixel_format=None, grab_mode=None, fb_count=None):
        self._check()
        if frame_size is not None:
            self._size = frame_size
        if pixel_format is not None:
            self._format = pixel_format
        if grab_mode is not None:
            self._grab = grab_mode
        if fb_count is not None:
            self._fb_count = fb_count
        self.deinit()
        self.init()

    # --- frame size and quality -----------------------------------------------------------
    def get_frame_size(self):
        self._check()
        return self._size

    def set_frame_size(self, value):
        self._check()
        _s.framesize(_sensor_size(value))
        self._size = value

    def get_quality(self):
        self._check()
        return self._quality

    def set_quality(self, value):
        self._check()
        if not 0 <= value <= 100:
            raise ValueError("Invalid setting for quality")
        _s.quality(_driver_quality(value))
        self._quality = value

    def get_pixel_format(self):
        return self._format

    def get_pixel_width(self):
        self._check()
        return _s._SIZES[_sensor_size(self._size)][0]

    def get_pixel_height(self):
        self._check()
        return _s._SIZES[_sensor_size(self._size)][1]

    def get_sensor_name(self):
        return "OV2640"

    def get_fb_count(self):
        return self._fb_count

    def get_grab_mode(self):
        return self._grab

    # --- sensor settings: set_NAME / get_NAME ---------------------------------------------
    def _set(self, name, value):
        self._check()
        r = _RANGE[name]
        value = int(value)
        if r is None or not r[0] <= value <= r[1]:
            raise ValueError("Invalid setting for " + name)
        _s._sensor[name] = value
        _s._sensor_changed()        # camera_sensor.json

    def _get(self, name, default=0):
        self._check()
        return _s._sensor.get(name, default)

    def set_contrast(self, v): self._set('contrast', v)
    def get_contrast(self): return self._get('contrast')
    def set_brightness(self, v): self._set('brightness', v)
    def get_brightness(self): return self._get('brightness')
    def set_saturation(self, v): self._set('saturation', v)
    def get_saturation(self): return self._get('saturation')
    def set_sharpness(self, v): self._set('sharpness', v)
    def get_sharpness(self): return self._get('sharpness')
    def set_denoise(self, v): self._set('denoise', v)
    def get_denoise(self): return self._get('denoise')
    def set_gainceiling(self, v): self._set('gainceiling', v)
    def get_gainceiling(self): return self._get('gainceiling')
    def set_colorbar(self, v): self._set('colorbar', v)
    def get_colorbar(self): return bool(self._get('colorbar'))
    def set_whitebal(self, v): self._set('whitebal', v)
    def get_whitebal(self): return bool(self._get('whitebal', 1))
    def set_gain_ctrl(self, v): self._set('gain_ctrl', v)
    def get_gain_ctrl(self): return bool(self._get('gain_ctrl', 1))
    def set_exposure_ctrl(self, v): self._set('exposure_ctrl', v)
    def get_exposure_ctrl(self): return bool(self._get('exposure_ctrl', 1))
    def set_hmirror(self, v): self._set('hmirror', v)
    def get_hmirror(self): return bool(self._get('hmirror'))
    def set_vflip(self, v): self._set('vflip', v)
    def get_vflip(self): return bool(self._get('vflip'))
    def set_aec2(self, v): self._set('aec2', v)
    def get_aec2(self): return bool(self._get('aec2'))
    def set_awb_gain(self, v): self._set('awb_gain', v)
    def get_awb_gain(self): return bool(self._get('awb_gain', 1))
    def set_agc_gain(self, v): self._set('agc_gain', v)
    def get_agc_gain(self): return self._get('agc_gain')
    def set_aec_value(self, v): self._set('aec_value', v)
    def get_aec_value(self): return self._get('aec_value', 168)
    def set_special_effect(self, v): self._set('special_effect', v)
    def get_special_effect(self): return self._get('special_effect')
    def set_wb_mode(self, v): self._set('wb_mode', v)
    def get_wb_mode(self): return self._get('wb_mode')
    def set_ae_level(self, v): self._set('ae_level', v)
    def get_ae_level(self): return self._get('ae_level')
    def set_dcw(self, v): self._set('dcw', v)
    def get_dcw(self): return bool(self._get('dcw', 1))
    def set_bpc(self, v): self._set('bpc', v)
    def get_bpc(self): return bool(self._get('bpc'))
    def set_wpc(self, v): self._set('wpc', v)
    def get_wpc(self): return bool(self._get('wpc', 1))
    def set_raw_gma(self, v): self._set('raw_gma', v)
    def get_raw_gma(self): return bool(self._get('raw_gma', 1))
    def set_lenc(self, v): self._set('lenc', v)
    def get_lenc(self): return bool(self._get('lenc', 1))
