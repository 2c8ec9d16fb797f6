"""The flash LED (GPIO 4 on the AI-Thinker ESP32-CAM) by PWM, as CameraWebServer drives it.

CameraWebServer: `led_intensity` 0..255 is the duty of a 5 kHz 8-bit PWM; the LED is lit at that
duty while a stream is served (capped at CONFIG_LED_MAX_INTENSITY, here `camera.flash_stream_max`)
and around a /capture: on, 150 ms for the sensor's exposure to follow, capture, off.
Here also photos (alarm photos, snapshots) when `camera.flash` says so: "always", or "night" when
the scene is dark. While armed the LED lights for viewers only when `camera.flash_stream` is
"always" (default "disarmed": a lit LED tells an intruder the camera watches).
Every change of the light dazzles the sensor for a while: `dazzled()` tells the motion detector
which frames to skip, so a flash is never taken for motion.
"""
import time

FREQ = 5000         # Hz, as CameraWebServer's ledcSetup(channel, 5000, 8)
ADAPT_MS = 150      # LED on this long before the frame (CameraWebServer's delay)
SETTLE_MS = 1000    # after the light changed, the exposure hunts this long: no detection
WAIT_MS = 1000      # a photo waits at most this for its lit frame, then goes without


class Flash:
    def __init__(self, pwm, cfg):
        self.pwm = pwm              # machine.PWM on the LED pin, created dark
        self.cfg = cfg              # the camera section
        self.intensity = 0          # CameraWebServer's led_intensity
        self.streaming = False
        self.armed = None           # fn() -> bool, the alarm's (set once it exists)
        self.dark = None            # fn(jpeg) -> bool, the alarm's brightness measure
        self.photos = 0             # photos lighting it now
        self.photo = 0              # and at what duty
        self.duty = 0               # duty now, 0..255
        self.flashes = 0
        self.since = self.changed = time.ticks_add(time.ticks_ms(), -SETTLE_MS)

    def update(self):
        """Light the LED as the stream, the photos and the armed state want it."""
        d = 0
        mode = self.cfg.flash_stream
        if self.streaming and (mode == 'always' or mode == 'disarmed' and not (
                self.armed and self.armed())):
            d = min(self.intensity, self.cfg.flash_stream_max)
        if self.photos and self.photo > d:
            d = self.photo
        if d != self.duty:
            self.pwm.duty_u16(d * 257)      # 8 bits as CameraWebServer onto the 16-bit scale
            self.duty = d
            now = time.ticks_ms()
            if time.ticks_diff(now, self.changed) >= SETTLE_MS:
                self.since = now            # the light was steady: a new disturbance starts
            self.changed = now

    def set_intensity(self, val):
        self.intensity = val
        self.update()

    def stream(self, on):
        self.streaming = on
        self.update()

    def hold(self, duty):
        """A photo wants the LED at `duty` until release()."""
        self.photos += 1
        self.photo = max(self.photo, duty)
        self.flashes += 1
        self.update()

    def release(self):
        self.photos -= 1
        if not self.photos:
            self.photo = 0
        self.update()

    def for_photo(self, cws):
        """The duty a photo is taken at: /capture (cws) as CameraWebServer at led_intensity; else
        camera.flash: 0 (off), flash_intensity ('always'), -1 ('night': if the scene is dark)."""
        if cws and self.intensity:
            return self.intensity
        mode = self.cfg.flash
        if mode == 'off':
            return 0
        return self.cfg.flash_intensity if mode == 'always' else -1

    def dazzled(self, stamp_ms):
        """True for a frame (captured at stamp_ms) lit by a photo's flash or taken while the
        exposure still follows a change of the light."""
        return self.photos > 0 or (time.ticks_diff(stamp_ms, self.since) >= 0 and
                                   time.ticks_diff(stamp_ms, self.changed) < SETTLE_MS)

    def status(self):
        return {'duty': self.duty, 'intensity': self.intensity, 'mode': self.cfg.flash,
                'stream': self.cfg.flash_stream, 'flashes': self.flashes}
