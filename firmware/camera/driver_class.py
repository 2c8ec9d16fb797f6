"""micropython-camera-API's class API (cnadler86; images for 1.24 and later) in the terms of the
function API, which CameraService speaks: `Camera(data_pins=..., pixel_format=PixelFormat.JPEG,
frame_size=FrameSize.VGA, ...)` behind init(0, format=..., framesize=...); `cam.capture()` (a
memoryview onto the driver's frame buffer, None on failure) behind capture() -> bytes or False;
`cam.set_<property>(v)` (ValueError when the sensor refuses) behind SETTERS, which here holds
every CameraWebServer variable the class can set; JPEG quality 0..100 (100 best) behind 10..63.
"""
from firmware.camera.framesize import FRAMESIZES

# AI-Thinker ESP32-CAM wiring (generic class-API images have no board defaults)
PINS = {'data_pins': [5, 18, 19, 21, 36, 39, 34, 35], 'vsync_pin': 25, 'href_pin': 23,
        'sda_pin': 26, 'scl_pin': 27, 'pclk_pin': 22, 'xclk_pin': 0, 'powerdown_pin': 32,
        'reset_pin': -1}


def api_quality(q):
    """CameraWebServer's quality (10..63, lower is better) on the class API's 0..100 scale."""
    return (63 - q) * 100 // 63


class ClassCamera:
    FAMILY = 'class'
    SETTERS = {
        'framesize': 'set_frame_size', 'quality': 'set_quality', 'brightness': 'set_brightness',
        'contrast': 'set_contrast', 'saturation': 'set_saturation',
        'sharpness': 'set_sharpness', 'special_effect': 'set_special_effect',
        'wb_mode': 'set_wb_mode', 'awb': 'set_whitebal', 'awb_gain': 'set_awb_gain',
        'aec': 'set_exposure_ctrl', 'aec2': 'set_aec2', 'ae_level': 'set_ae_level',
        'aec_value': 'set_aec_value', 'agc': 'set_gain_ctrl', 'agc_gain': 'set_agc_gain',
        'gainceiling': 'set_gainceiling', 'bpc': 'set_bpc', 'wpc': 'set_wpc',
        'raw_gma': 'set_raw_gma', 'lenc': 'set_lenc', 'dcw': 'set_dcw', 'colorbar': 'set_colorbar',
        'vflip': 'set_vflip', 'hmirror': 'set_hmirror',
    }
    PSRAM = 0                   # the class API always puts frame buffers in PSRAM
    XCLK_10MHz = 10000000
    XCLK_20MHz = 20000000

    def __init__(self, mod):
        self.m = mod
        self.cam = None
        self.JPEG = mod.PixelFormat.JPEG
        self.GRAYSCALE = mod.PixelFormat.GRAYSCALE
        for n in FRAMESIZES:    # FRAME_VGA -> FrameSize.VGA, FRAME_96X96 -> FrameSize.R96X96
            setattr(self, 'FRAME_' + n, getattr(mod.FrameSize, ('R' + n) if n[0] < 'A' else n))

    def __getattr__(self, name):
        return getattr(self.cam, name)      # set_<property>: the Camera's own

    def init(self, _id, format, framesize, quality, fb_location, fb_size, xclk_freq):
        self.cam = None
        m = self.m
        self.cam = m.Camera(pixel_format=format, frame_size=framesize,
                            jpeg_quality=api_quality(quality), fb_count=fb_size,
                            grab_mode=m.GrabMode.WHEN_EMPTY, xclk_freq=xclk_freq, **PINS)
        return True

    def deinit(self):
        if self.cam is not None:
            self.cam.deinit()
        return True

    def capture(self):
        """One frame as bytes, or False. The memoryview is the driver's buffer, which the next
        capture reuses while a viewer may still be sending this frame: copied once (the
        function API's capture() makes the same copy) and the buffer handed back at once."""
        cam = self.cam
        try:
            mv = cam.capture()
        except OSError:             # not initialised (ENOENT)
            return False
        if mv is None:
            return False
        try:
            return bytes(mv)
        finally:
            mv = None
            cam.free_buffer()   # a copy that raised MemoryError gives the buffer back too

    def set_quality(self, q):
        self.cam.set_quality(api_quality(q))
