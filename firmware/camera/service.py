"""The one owner of the camera driver: a single capture loop feeds every consumer.

Viewers, snapshots and motion detection never call the driver; they state a demand and wait for
the next frame. The loop captures at the highest rate anybody needs (the configured maximum while
someone streams, the detection rate while only the detector looks, nothing while nobody does), so
one capture serves every consumer. `camera.capture()` blocks the VM until the sensor delivers, so
the loop sleeps on asyncio until just before the next frame is due and lets the viewers send in
that time. A failed capture or init is retried with deinit/init and backoff; after too many
failures in a row the board is rebooted through `on_give_up`.
"""
import asyncio
import gc
import time

from firmware.camera.framesize import FRAMESIZES
from firmware.core.clock import TO_UNIX
from firmware.core.events import CAMERA

# The service speaks micropython-camera-driver's function API (`camera.init(...)`, capture()
# -> bytes or False, one setter function per property), the board's own module on its images;
# driver_class.py adapts micropython-camera-API's Camera class to it. SETTERS: the variables the
# function API can apply and the function for each (a class-API adapter brings its own table).
SETTERS = {
    'framesize': 'framesize', 'quality': 'quality', 'brightness': 'brightness',
    'contrast': 'contrast', 'saturation': 'saturation', 'special_effect': 'speffect',
    'wb_mode': 'whitebalance', 'vflip': 'flip', 'hmirror': 'mirror',
}
# CameraWebServer's /control variables: each applies where the driver can set it, the others
# are refused and left out of /status.
VARS = ('framesize', 'quality', 'brightness', 'contrast', 'saturation', 'special_effect',
        'wb_mode', 'vflip', 'hmirror', 'sharpness', 'awb', 'awb_gain', 'aec', 'aec2', 'ae_level',
        'aec_value', 'agc', 'agc_gain', 'gainceiling', 'bpc', 'wpc', 'raw_gma', 'lenc', 'dcw',
        'colorbar', 'led_intensity')
SHORT_MS = 3000   # a frame-sized block may take that long to come back from the viewers
OLD_HELD = 1      # frames older than the latest that viewers may still send as one is captured,
TIGHT = 24        # on a heap of fewer frames than this (a PSRAM heap holds 60 VGA ones or more)
FRAME_GUESS = 32768   # bytes of a VGA frame, until the camera has captured one
# CameraWebServer's pixformat numbers (esp32-camera's pixformat_t)
PIXFORMAT = {'JPEG': 4, 'GRAYSCALE': 3}
RANGES = {
    'framesize': (0, len(FRAMESIZES) - 1), 'quality': (10, 63), 'brightness': (-2, 2),
    'contrast': (-2, 2), 'saturation': (-2, 2), 'sharpness': (-2, 2), 'special_effect': (0, 6),
    'wb_mode': (0, 4), 'ae_level': (-2, 2), 'aec_value': (0, 1200), 'agc_gain': (0, 30),
    'gainceiling': (0, 6), 'led_intensity': (0, 255),
}
DEFAULTS = {
    'awb': 1, 'awb_gain': 1, 'aec': 1, 'aec2': 0, 'ae_level': 0, 'aec_value': 168, 'agc': 1,
    'agc_gain': 0, 'gainceiling': 0, 'bpc': 0, 'wpc': 1, 'raw_gma': 1, 'lenc': 1, 'dcw': 1,
    'colorbar': 0, 'sharpness': 0, 'led_intensity': 0,
}
SIZES = {
    '96X96': (96, 96), 'QQVGA': (160, 120), 'QCIF': (176, 144), 'HQVGA': (240, 176),
    '240X240': (240, 240), 'QVGA': (320, 240), 'CIF': (400, 296), 'HVGA': (480, 320),
    'VGA': (640, 480), 'SVGA': (800, 600), 'XGA': (1024, 768), 'HD': (1280, 720),
    'SXGA': (1280, 1024), 'UXGA': (1600, 1200),
}

_TO_UNIX_US = TO_UNIX * 1000000


class CameraService:
    def __init__(self, driver, cfg, log, bus=None, on_give_up=None, beat=None, flash=None):
        self.drv = driver          # the `camera` module, or driver_class.ClassCamera
        self.flash = flash         # camera.flash.Flash, or None: no LED on this board
        self.setters = getattr(driver, 'SETTERS', SETTERS)
        self.beat = beat or (lambda: None)   # progress for the watchdog, idle or busy
        self.cfg = cfg
        self.log = log
        self.bus = bus
        self.on_give_up = on_give_up
        s = dict(DEFAULTS)
        for k in ('quality', 'brightness', 'contrast', 'saturation', 'special_effect', 'wb_mode',
                  'vflip', 'hmirror'):
            s[k] = getattr(cfg, k)
        s['framesize'] = FRAMESIZES.index(cfg.framesize)
        # what this driver can apply, and nothing else: /status never shows a value as set
        # that never reached the sensor
        self.sensor = dict((k, s[k]) for k in VARS if k in self.setters or
                           k == 'led_intensity' and flash)
        self.jpeg = cfg.format == 'JPEG'   # GRAYSCALE: raw pixels for detection only, no stream
        self.frame = None          # latest frame (bytes), shared by every consumer
        self.seq = 0               # number of the latest frame
        self.stamp_ms = 0          # ticks_ms when it was captured
        self.stamp_us = 0          # wall clock of the capture, microseconds (X-Timestamp)
        self.state = 'starting'    # starting | on | off | failed
        self.wanted = True         # False after camera_off
        self.viewers = 0           # consumers that want every frame at max_fps
        self.needs = {}            # name -> fps, low-rate consumers (motion detection)
        self._oneshot = 0          # snapshots waiting for a fresh frame
        self._waiters = 0          # consumers ready for the next frame right now
        self._wake = asyncio.Event()
        self._frame_ev = asyncio.Event()
        self._held = {}            # seq -> viewers sending that frame (it lives until sent)
        # modcamera.c hands the driver's buffer back only after copying the frame out of it:
        # when the copy raises MemoryError the buffer is lost, and every capture after it waits
        # 4 s for it and fails. So on a tight heap the block is found before the driver is asked.
        self._copy_loses_buffer = self.family() == 'functions'
        self._size = 0             # bytes of the last frame
        self._heap = gc.mem_free() + gc.mem_alloc()   # both walk the whole heap: once, here
        # most_held: the most frames viewers were still sending as a capture began
        self.stats = {'captures': 0, 'failed': 0, 'inits': 0, 'restarts': 0, 'no_memory': 0,
                      'most_held': 0}
        self._fails = 0            # failures in a row

    # --- consumers -------------------------------------------------------------------------
    def acquire(self):
        """A viewer starts: capture at the full configured rate while anyone holds this."""
        self.viewers += 1
        self._wake.set()
        if self.viewers == 1 and self.flash:
            self.flash.stream(True)     # CameraWebServer: lit while streaming

    def release(self):
        self.viewers -= 1
        if not self.viewers and self.flash:
            self.flash.stream(False)

    def hold(self, seq):
        """A viewer starts sending frame `seq` (from its own memory, no copy): the frame stays
        alive until it calls let_go."""
        h = self._held
        h[seq] = h.get(seq, 0) + 1

    def let_go(self, seq):
        h = self._held
        n = h[seq] - 1
        if n:
            h[seq] = n
        else:
            del h[seq]
            self._wake.set()        # the capture may be waiting for this frame to go

    def _old_held(self):
        """How many frames older than the latest ones viewers are still sending."""
        n = 0
        for s in self._held:        # a for loop's iterator is on the stack: no allocation
            if s < self.seq:
                n += 1
        return n

    def _short_of_room(self):
        """The heap holds fewer than TIGHT frames in all. Free bytes would say more but cost a
        walk of the whole allocation table (milliseconds on a 4 MB PSRAM heap), and before a
        collection they count the garbage as taken."""
        return self._heap < TIGHT * self.frame_bytes()

    def frame_bytes(self):
        """Bytes of the last frame (a guess before the first)."""
        return self._size or FRAME_GUESS

    def _room_for_frame(self):
        """A block for the next frame exists. Tried with a bytearray of its size, where a
        MemoryError loses nothing, and let go: the driver's copy finds that block once the
        allocator has collected. Counting free bytes is not enough: they may be in pieces."""
        try:
            bytearray(self._size + (self._size >> 4))   # frames vary: a little to spare
        except MemoryError:
            return False
        return True

    def _restart(self):
        try:
            self._init()
        except (OSError, ValueError) as e:
            self.log.warn('camera: restart failed: %s' % e)
            self._set_state('failed')             # the loop retries with backoff

    def need(self, name, fps):
        """A low-rate consumer (e.g. motion detection) wants frames at `fps`; 0 withdraws."""
        if fps:
            self.needs[name] = fps
        else:
            self.needs.pop(name, None)
        self._wake.set()

    def period_ms(self):
        """Current capture period; 0 when nobody needs frames."""
        if self.viewers:
            return 1000 // self.cfg.max_fps
        fps = max(self.needs.values()) if self.needs else 0
        if self._oneshot and not fps:
            return 1
        return 1000 // fps if fps else 0

    def fresh(self):
        """The latest frame is recent enough to hand out instead of waiting for the next."""
        p = self.period_ms() or 1000 // self.cfg.max_fps
        if self.flash and self.flash.dazzled(self.stamp_ms):
            return False            # lit for a photo, or exposed as the light changed
        return self.frame is not None and time.ticks_diff(time.ticks_ms(), self.stamp_ms) <= 2 * p

    async def next_frame(self, after):
        """Wait for a frame newer than number `after`; returns its number (frame in .frame)."""
        self._waiters += 1
        if self._waiters == 1:
            self._wake.set()
        try:
            while self.seq <= after or self.frame is None:
                await self._frame_ev.wait()
        finally:
            self._waiters -= 1
        return self.seq

    async def snapshot(self, timeout_ms=5000, cws=False):
        """A fresh JPEG: the latest frame if recent, else one captured for this request; lit
        by the flash LED as camera.flash (or for /capture, `cws`, led_intensity) says."""
        if self.state == 'off':
            raise OSError('camera is off')
        if not self.jpeg:
            raise OSError('camera.format is GRAYSCALE: no JPEG (detection only)')
        f = self.flash
        duty = f.for_photo(cws) if f else 0
        if duty < 0:                            # 'night': only when the scene is dark
            frame = await self._fresh(timeout_ms)
            if not (f.dark and f.dark(frame)):
                return frame
            frame = None
            duty = self.cfg.flash_intensity
        if duty:
            frame = await self.lit_frame(duty)
            if frame:
                return frame
        return await self._fresh(timeout_ms)

    async def lit_frame(self, duty):
        """A frame captured with the flash LED at `duty`, or None when none came within WAIT_MS
        (the caller then takes one without). The LED goes on, the sensor gets ADAPT_MS to
        follow, then the second frame is taken: the driver may hold one exposed before the LED."""
        from firmware.camera.flash import ADAPT_MS, WAIT_MS as timeout_ms
        f = self.flash
        f.hold(duty)
        self._oneshot += 1
        try:
            await asyncio.sleep_ms(ADAPT_MS)
            t = time.ticks_ms()
            seq = await asyncio.wait_for_ms(self.next_frame(self.seq), timeout_ms)
            left = timeout_ms - time.ticks_diff(time.ticks_ms(), t)
            await asyncio.wait_for_ms(self.next_frame(seq), left if left > 0 else 1)
            return self.frame
        except asyncio.TimeoutError:
            self.log.warn('flash: no frame within %d ms: the photo is taken without' % timeout_ms)
            return None
        finally:
            self._oneshot -= 1
            f.release()

    async def _fresh(self, timeout_ms):
        if self.fresh():
            return self.frame
        self._oneshot += 1
        self._wake.set()
        try:
            await asyncio.wait_for_ms(self.next_frame(self.seq), timeout_ms)
        except asyncio.TimeoutError:
            raise OSError('camera: no frame within %d ms (%s)' % (timeout_ms, self.state))
        finally:
            self._oneshot -= 1
        return self.frame

    # --- settings --------------------------------------------------------------------------
    def apply(self, var, val):
        """Set one CameraWebServer variable. KeyError: unknown var; NotImplementedError: the
        driver cannot apply it; ValueError: bad value, or the sensor refused it."""
        if var not in VARS:
            raise KeyError(var)
        if var not in self.sensor:
            if var == 'led_intensity':
                raise NotImplementedError('led_intensity: this board has no flash LED '
                                          '(camera.flash_pin is null)')
            raise NotImplementedError('%s cannot be set on this camera (%s API driver, sensor)'
                                      % (var, self.family()))
        lo, hi = RANGES.get(var, (0, 1))
        if not lo <= val <= hi:
            raise ValueError('%s must be %d..%d' % (var, lo, hi))
        if var == 'led_intensity':
            self.flash.set_intensity(val)
        elif self.state == 'on':
            self._set(var, val)
            if var == 'framesize':
                self.frame = None   # of the old size: a snapshot now waits for the new one
        self.sensor[var] = val

    def _set(self, var, val):
        d = self.drv
        if var == 'framesize':
            val = getattr(d, 'FRAME_' + FRAMESIZES[val])
        if getattr(d, self.setters[var])(val) is False:
            raise OSError('camera is not initialised')

    def family(self):
        return getattr(self.drv, 'FAMILY', 'functions')

    def cws_status(self):
        """CameraWebServer's /status: the settings plus the keys its clients read."""
        s = dict(self.sensor)
        s['xclk'] = self.cfg.xclk_mhz
        s['pixformat'] = PIXFORMAT[self.cfg.format]
        return s

    def size(self):
        return SIZES[FRAMESIZES[self.sensor['framesize']]]

    # --- power -----------------------------------------------------------------------------
    def turn_off(self):
        self.wanted = False
        self._wake.set()

    def turn_on(self):
        self.wanted = True
        self._fails = 0
        self._wake.set()

    def _set_state(self, state):
        if state != self.state:
            self.state = state
            self.log('camera', state)
            if self.bus:
                self.bus.emit(CAMERA, state)

    def _init(self):
        d = self.drv
        try:
            d.deinit()          # a second init() without deinit() fails
        except Exception:
            pass
        self.stats['inits'] += 1
        st = self.sensor
        # the AI-Thinker pins are the driver's defaults
        d.init(0, format=d.JPEG if self.jpeg else d.GRAYSCALE,
               framesize=getattr(d, 'FRAME_' + FRAMESIZES[st['framesize']]),
               quality=st['quality'], fb_location=d.PSRAM, fb_size=1,
               xclk_freq=d.XCLK_20MHz if self.cfg.xclk_mhz == 20 else d.XCLK_10MHz)
        for var in list(st):
            if var not in ('framesize', 'quality', 'led_intensity'):
                try:
                    self._set(var, st[var])
                except ValueError as e:
                    # this sensor has no such control (the OV2640 has no sharpness): refused
                    # from now on and left out of /status, never shown as if applied
                    del st[var]
                    self.log.warn('camera: %s refused by the sensor (%s): left out' % (var, e))

    # --- the capture loop ------------------------------------------------------------------
    async def _idle(self):
        """Wait for demand, waking every second to show the watchdog we are alive."""
        self._wake.clear()
        try:
            await asyncio.wait_for_ms(self._wake.wait(), 1000)
        except asyncio.TimeoutError:
            pass

    async def _nap(self, seconds):
        for _ in range(seconds):
            await asyncio.sleep(1)
            self.beat()

    async def run(self):
        backoff = 1
        short = None               # since when captures find no memory for their frame
        last = time.ticks_ms()
        while True:
            self.beat()
            if not self.wanted:
                if self.state != 'off':
                    self.drv.deinit()
                    self._set_state('off')
                await self._idle()
                continue
            if self.state != 'on':
                try:
                    self._init()
                    self._set_state('on')
                except (OSError, ValueError) as e:
                    self._failed('init failed: %s' % e)
                    await self._nap(backoff)
                    backoff = min(backoff * 2, 30)
                    continue
            period = self.period_ms()
            if not period:
                await self._idle()
                continue
            if not self._waiters:
                # Every consumer is still busy with the last frame (a viewer sending, say):
                # a capture now would be thrown away, so wait until one is ready.
                await self._idle()
                continue
            wait = time.ticks_diff(time.ticks_add(last, period), time.ticks_ms())
            if wait > 0:
                # Short naps, so a viewer joining a slow detector is served at once.
                await asyncio.sleep_ms(wait if wait < 20 else 20)
                continue
            if self._old_held() > OLD_HELD and self._short_of_room():
                # Viewers reading at different speeds drift apart, each sending a frame of its
                # own from the camera's memory: four held four VGA frames, and a 384K heap had
                # no block for the next ("camera failed", no frame for anyone). Waiting for them
                # to let go keeps it to one older frame, the latest and the new one; a single
                # slow reader does not hold the others back, and where the heap has room (PSRAM)
                # nobody waits: two slow readers would slow the camera for everyone.
                await self._idle()
                continue
            held = len(self._held)
            if held > self.stats['most_held']:
                self.stats['most_held'] = held
            last = time.ticks_ms()
            # capture() blocks the VM, so nobody can look at .frame meanwhile: let go of the old
            # frame first (the attribute and this loop's own local), so that unless a viewer still
            # sends it, its block can hold the new one.
            self.frame = frame = None
            why = 'capture failed'
            room = not (self._copy_loses_buffer and self._short_of_room()) or self._room_for_frame()
            if room:
                try:
                    frame = self.drv.capture()      # False when it failed
                except MemoryError:
                    room = False
                    if self._copy_loses_buffer:
                        self._restart()             # deinit frees the lost buffer
            if not room:
                # No block for the frame: most often viewers still sending older frames hold
                # the heap a new one needs, and they let go as their clients take them (or are
                # dropped as lagging within seconds). Retry at the next periods meanwhile; only
                # a shortage that outlasts SHORT_MS is a failed capture (N in a row reboot).
                gc.collect()
                self.stats['no_memory'] += 1
                if short is None:
                    short = time.ticks_ms()
                if time.ticks_diff(time.ticks_ms(), short) < SHORT_MS:
                    continue
                short = None
                why = 'capture: no memory for the frame'
            if not frame:
                self.stats['failed'] += 1
                if self._failed(why):
                    self.drv.deinit()
                    self._set_state('failed')
                    await self._nap(backoff)
                    backoff = min(backoff * 2, 30)
                continue
            backoff = 1
            short = None
            self._fails = 0
            self.stats['captures'] += 1
            self.frame = frame
            self._size = len(frame)
            self.stamp_ms = time.ticks_ms()
            self.stamp_us = time.time_ns() // 1000 + _TO_UNIX_US   # since 1970 on either epoch
            self.seq += 1
            self._frame_ev.set()
            self._frame_ev.clear()
            await asyncio.sleep_ms(0)

    def _failed(self, why):
        """Count a failure; True when the driver should be restarted."""
        self._fails += 1
        self.log.warn('camera', why, '(%d in a row)' % self._fails)
        limit = self.cfg.reboot_after_failures
        if limit and self._fails >= limit and self.on_give_up:
            self.log.error('camera: %d failures in a row, rebooting' % self._fails)
            self.on_give_up('camera failed %d times in a row' % self._fails)
        if self.state == 'on':
            if self._fails % 3 == 0:
                self.stats['restarts'] += 1
                return True
            return False
        self._set_state('failed')
        return False

    def status(self):
        w, h = self.size()
        return {'state': self.state, 'format': self.cfg.format, 'driver': self.family(),
                'framesize': FRAMESIZES[self.sensor['framesize']],
                'width': w, 'height': h, 'viewers': self.viewers, 'frames': self.seq,
                'captures': self.stats['captures'], 'failed': self.stats['failed'],
                'restarts': self.stats['restarts'], 'inits': self.stats['inits'],
                'no_memory': self.stats['no_memory'], 'most_held': self.stats['most_held']}
