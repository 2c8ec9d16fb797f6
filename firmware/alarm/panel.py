"""The alarm: armed state, motion detection on the shared frames, alarm events, auto-arm.

Detection runs on the very JPEG frames the camera service already captures (luma from the DC
coefficients, no decoder, no second capture, no camera re-init). While armed it asks the camera
for `detect_fps` frames; when somebody streams, those frames are taken from the stream's capture.
The armed state changes only by command or by auto-arm, and survives a reboot (alarm.json).
Auto-arm: when every management server has been unreachable for `auto_arm_after_s` and the
Internet answers, the alarm arms itself; with no Internet it does not, and says why.
The owner's word stands: after an explicit disarm (admin, LFCP, Telegram) auto-arm holds off until
the owner arms again, or, when `rearm_after_s` > 0, until management has been lost that long
after the disarm; the hold is in the status, the log and alarm.json.
"""
import asyncio
import time

from firmware.core import clock, store
from firmware.core.commands import CommandError
from firmware.core.events import ALARM, ARMED, CAMERA, INTERNET, MANAGEMENT

STATE_FILE = 'alarm.json'
NO_MEMORY_RETRY_S = 5
DARK = 40               # mean grey (0..255) of a frame's luma below which camera.flash 'night' lights


class AlarmEvent:
    def __init__(self, reason, score, frame):
        self.time = time.time()
        self.reason = reason        # 'motion' | 'pir' | 'motion+pir' (alarm.pir) | 'test'
        self.score = score          # changed area, per mille
        self.frame = frame          # the JPEG that triggered (shared, not copied)

    def info(self):
        return {'time': clock.unix(self.time), 'reason': self.reason, 'score': self.score}


class Alarm:
    def __init__(self, cam, cfg, log, bus, internet=None, management_configured=False,
                 missing=None, pir=None):
        self.cam = cam
        self.pir = pir                      # firmware.alarm.pir.Pir or None (alarm.pir 'off')
        self.cfg = cfg
        self.log = log
        self.bus = bus
        self.internet = internet            # async fn() -> bool, the Internet probe
        self.auto = cfg.auto_arm and management_configured
        saved = self._load()
        self.state = saved.get('state', 'disarmed')
        self.commanded = saved.get('commanded', 'disarmed')
        self.held = saved.get('held') is True   # the owner disarmed: auto-arm holds off
        self.held_at = time.ticks_ms()
        self.hold_note = None
        self.missing = missing              # why detection cannot run: arming is refused
        if missing:
            log.error('alarm: cannot arm:', missing)
            self.state = 'disarmed'         # never "armed but blind" (the command is kept)
        self.events = []
        self.photo = None                   # the frame of the latest alarm (the admin page shows it)
        self.last_alarm = None
        self.alarms = 0
        self.frames = 0
        self.score = 0
        self.error = None
        self.lost_since = None              # ticks_ms when all management was lost
        self.auto_note = None
        self._armed_ev = asyncio.Event()
        self.detector = None
        self.extractor = None
        self.grid = None                    # the detector's own grid (alarm/grid.py)
        self.cells = None                   # what the detector is fed: extractor or grid
        self.fresh = True                   # the detector may be rebuilt for a new frame size
        self.dazzled = 0                    # frames skipped: lit by the flash or adapting to it
        self.lit = 0                        # the flash LED's duty the background was learnt at
        self.flash = fl = getattr(cam, 'flash', None)   # camera.flash.Flash or None
        if fl:
            fl.armed = self.armed
            fl.dark = self.dark
        bus.on(CAMERA, self._camera)
        bus.on(MANAGEMENT, self._management)
        bus.on(INTERNET, self._internet)

    # --- state ------------------------------------------------------------------------------
    def _load(self):
        """The saved state; a broken file is moved aside (alarm.json.bad) and the alarm starts
        fresh, disarmed, with a log line that says why: never a crash, never a dead alarm."""
        try:
            saved = store.load(STATE_FILE, {})
            why = None
            if not isinstance(saved, dict):
                why = 'must be a JSON object'
            elif saved.get('state', 'disarmed') not in ('disarmed', 'armed', 'auto-armed'):
                why = 'unknown state %r' % (saved.get('state'),)
            elif saved.get('commanded', 'disarmed') not in ('disarmed', 'armed'):
                why = 'unknown commanded state %r' % (saved.get('commanded'),)
        except ValueError as e:            # store names the file already
            why = str(e)[len(STATE_FILE) + 2:]
        if why is None:
            return saved
        bad = store.set_aside(STATE_FILE)
        self.log.error('alarm: %s: %s; moved to %s, starting disarmed' % (STATE_FILE, why, bad))
        return {}

    def armed(self):
        return self.state != 'disarmed'

    def _load_detection(self):
        """Load the detection code for arming: CommandError when it cannot, never armed blind."""
        if not self.missing:
            try:
                import firmware.alarm.luma
                import firmware.alarm.detector
            except (ImportError, ValueError, SyntaxError, NotImplementedError) as e:
                self.missing = ('motion detection cannot load on this MicroPython (%s): flash '
                                'the build for its version (make deploy MICROPYTHON=...)' % e)
                self.log.error('alarm: cannot arm:', self.missing)
        if self.missing:
            raise CommandError('cannot arm: ' + self.missing)

    def set(self, state, why, commanded=True):
        if state != 'disarmed':
            self._load_detection()
        if commanded:
            self.commanded = 'armed' if state != 'disarmed' else 'disarmed'
        if state == self.state:
            if commanded:
                self._save()
            return
        self.state = state
        self._save()
        self.log.note('alarm', state, '(%s)' % why)
        self.bus.emit(ARMED, state, why)
        if self.flash:
            self.flash.update()             # camera.flash_stream 'disarmed': dark while armed
        if self.detector:
            self.detector.reset()
        self.fresh = True
        self._armed_ev.set()

    def _save(self):
        try:
            store.save(STATE_FILE, {'state': self.state, 'commanded': self.commanded,
                                    'held': self.held})
        except OSError as e:
            self.log.error('alarm: cannot save state:', e)

    async def arm(self, args):
        self._hold(False)
        self.set('armed', 'command')
        return 'alarm armed'

    async def disarm(self, args):
        self._hold(True)
        self.set('disarmed', 'command')
        return 'alarm disarmed'

    def _hold(self, on):
        """The owner's disarm holds auto-arm off; arming (or rearm_after_s) ends the hold."""
        self.held = on
        self.held_at = time.ticks_ms()
        self.hold_note = None
        if on and self.auto:
            self.log('alarm: owner disarmed: no auto-arm until armed again' + (
                ' or management lost for %d s' % self.cfg.rearm_after_s
                if self.cfg.rearm_after_s else ''))

    def _held(self):
        """True while the owner's disarm holds; says once when the hold stops an auto-arm."""
        if not self.held:
            return False
        n = self.cfg.rearm_after_s
        if n:
            since = self.lost_since
            if time.ticks_diff(self.held_at, since) > 0:
                since = self.held_at
            if time.ticks_diff(time.ticks_ms(), since) >= n * 1000:
                self.held = False
                self.log.warn('alarm: management lost for %d s since the owner disarmed:'
                              ' auto-arm allowed again' % n)
                return False
        if self.hold_note is None:
            self.hold_note = 'owner disarmed: not auto-arming'
            self.log.warn('alarm:', self.hold_note)
        return True

    async def test(self, args):
        try:
            frame = await self.cam.snapshot()
        except OSError as e:  # camera off or failing: the caller's answer, not a crash
            raise CommandError('no test alarm: %s' % (e.args[0] if e.args else 'no camera'))
        self._raise(AlarmEvent('test', 0, frame))
        return 'test alarm raised'

    # --- events from other services -------------------------------------------------------------
    def _camera(self, state):
        if state == 'on' and self.detector:
            self.detector.reset()           # never alarm on the first frames after a restart
            self.fresh = True

    def _management(self, up):
        if up:
            self.lost_since = None
            if self.state == 'auto-armed' and self.cfg.on_management_return == 'restore':
                self.set(self.commanded, 'management is back: restoring the commanded state',
                         commanded=False)
        elif self.lost_since is None:
            self.lost_since = time.ticks_ms()

    def _internet(self, up):
        if up and self.lost_since is not None:
            self._armed_ev.set()            # let the auto-arm check run now

    async def auto_arm(self):
        """Arm when management is lost for long enough and the Internet is still reachable."""
        while True:
            await asyncio.sleep(1)
            if not self.auto or self.lost_since is None or self.state != 'disarmed':
                continue
            if time.ticks_diff(time.ticks_ms(), self.lost_since) < self.cfg.auto_arm_after_s * 1000:
                continue
            if self._held():
                continue
            up = await self.internet() if self.internet else False
            if up and self.missing:
                self._note('management lost but detection cannot run: not auto-arming')
            elif up:
                self.auto_note = None
                self.set('auto-armed', 'management lost, Internet up', commanded=False)
            else:
                self._note('management lost but no Internet: not auto-arming')
                await asyncio.sleep(10)

    def _note(self, note):
        if self.auto_note != note:
            self.auto_note = note
            self.log.warn('alarm:', note)

    # --- detection ----------------------------------------------------------------------------
    def _raise(self, ev):
        self.alarms += 1
        # the frame already exists (the camera's, shared): keeping the latest one costs one frame
        # of heap until the next alarm, never a copy
        self.photo = ev.frame if ev.frame and ev.frame[:2] == b'\xff\xd8' else None
        self.events.append(ev.info())
        if len(self.events) > self.cfg.events_kept:
            self.events.pop(0)
        self.log.note('ALARM', ev.reason, 'score %d' % ev.score, level='W')
        self.bus.emit(ALARM, ev)

    async def run(self):
        """Detection code and buffers (15 KB + 28 KB at VGA) are loaded on the first arming: a
        camera that is never armed leaves that heap to its viewers. They are kept from then on
        (arming and disarming again must not churn big blocks through a small heap)."""
        seq = 0
        while True:
            if not self.armed():
                self.cam.need('motion', 0)
                self._armed_ev.clear()
                await self._armed_ev.wait()
                continue
            if self.extractor is None:
                try:
                    self._load_detection()
                except CommandError:        # armed from flash, but the code cannot load
                    self.set('disarmed', 'detection cannot load', commanded=False)
                    continue
            self.cam.need('motion', self.cfg.detect_fps)
            start = time.ticks_ms()
            seq = await self.cam.next_frame(seq)
            fl = self.flash
            if fl is not None and fl.dazzled(self.cam.stamp_ms):
                self.dazzled += 1           # a flash is no motion
                continue
            frame = self.cam.frame
            w, h = self.cam.size()
            try:
                d = self._luma(frame, w, h)
                if fl is not None and fl.duty != self.lit:
                    self.lit = fl.duty      # the LED now lights the scene, or no longer: relearn
                    d.reset()
            except ValueError as e:
                frame = None
                self._refused(str(e))
                continue
            except MemoryError:
                frame = None
                self.error = 'no memory for the detection buffers at %dx%d' % (w, h)
                self.log.warn('alarm:', self.error, '- retry in %d s' % NO_MEMORY_RETRY_S)
                await asyncio.sleep(NO_MEMORY_RETRY_S)
                continue
            c = self.cells                  # the extractor, or the detector's own grid
            self.score = d.feed(c.luma, c.w8, c.h8)
            self.frames += 1
            hit, reason = d.triggered, 'motion'
            if self.pir is not None:
                hit, reason = self.pir.fuse(hit)
            if hit and self.armed():
                now = time.ticks_ms()
                if self.last_alarm is None or time.ticks_diff(now, self.last_alarm) >= self.cfg.event_gap_s * 1000:
                    self.last_alarm = now
                    photo = frame if self.cam.jpeg else None
                    frame = None
                    duty = fl.for_photo(False) if fl is not None and photo else 0
                    if duty < 0:
                        duty = self.cam.cfg.flash_intensity if self._level() < DARK else 0
                    if duty:                # one frame in the heap: the unlit one goes first
                        photo = None
                        photo = await self.cam.lit_frame(duty) or self.cam.frame
                    self._raise(AlarmEvent(reason, self.score, photo))
                    photo = None
            frame = None
            rest = 1000 // self.cfg.detect_fps - time.ticks_diff(time.ticks_ms(), start)
            if rest > 0:
                await asyncio.sleep_ms(rest)

    def _refused(self, why):
        """Keep the reason for the status; log it when it changes, not for every frame (a camera
        sending bad frames at detect_fps would flush the log and the LFCP LOG queue)."""
        if why != self.error:
            self.log.warn('alarm: frame refused:', why)
        self.error = why

    def dark(self, frame):
        """True when a JPEG shows a dark scene (camera.flash 'night'): the mean of its DC luma is
        below DARK. Loads the extractor as arming does, when the alarm has not yet."""
        try:
            self._load_detection()
            w, h = self.cam.size()
            self._extract(frame, w, h)
        except (CommandError, ValueError, MemoryError) as e:
            self.log.warn('flash: cannot tell how dark the scene is:', e)
            return False
        return self._level() < DARK

    def _level(self):
        """Mean grey (0..255) of the luma last extracted."""
        x = self.extractor
        n = x.w8 * x.h8
        return sum(memoryview(x.luma)[:n]) // n

    def _extract(self, frame, w, h):
        x = self.extractor
        if x is None or x.max_w8 * 8 < w or x.max_h8 * 8 < h:
            from firmware.alarm.luma import LumaExtractor
            self.extractor = x = None
            self.extractor = x = LumaExtractor((w + 7) // 8, (h + 7) // 8)
        if self.cam.jpeg:
            x.extract_into(frame)          # allocates nothing per frame
        else:
            x.from_gray(frame, w, h)       # a GRAYSCALE camera, same detector
        return x

    def _luma(self, frame, w, h):
        """Luma of `frame` into the extractor; returns the detector for its size. Buffers are
        (re)built when the frame size outgrows them: ValueError for a bad frame, MemoryError when
        the heap has no room for them."""
        x = self._extract(frame, w, h)
        d = self.detector
        if d is not None and (d.w8 != x.w8 or d.h8 != x.h8) and not self.fresh:
            # The frame size changed while armed: a new detector would spend frames learning,
            # so keep watching on this one's grid (alarm/grid.py), whoever changed the size.
            g = self.grid
            if g is None or g.w8 != d.w8 or g.h8 != d.h8:
                from firmware.alarm.grid import Grid
                self.grid = g = None
                self.grid = g = Grid(d.w8, d.h8)
            if self.cells is not g:
                self.log.warn('alarm: frame size now %dx%d, detection stays at %dx%d'
                              % (w, h, d.w8 * 8, d.h8 * 8))
            self.cells = g.fit(x)
            return d
        self.fresh = False
        self.cells = x
        if d is None or d.w8 != x.w8 or d.h8 != x.h8:
            from firmware.alarm.detector import Detector
            self.detector = d = None
            self.detector = d = Detector(x.w8, x.h8, sensitivity=self.cfg.sensitivity,
                                         mask=self.cfg.mask or None,
                                         min_frames=self.cfg.min_frames)
        return d

    def status(self):
        s = {'state': self.state, 'commanded': self.commanded, 'alarms': self.alarms,
             'frames_checked': self.frames, 'score': self.score, 'events': self.events[-5:],
             'auto_arm': self.auto}
        if self.auto_note:
            s['auto_arm_note'] = self.auto_note
        if self.held and self.auto:
            s['owner_hold'] = 'disarmed by the owner: no auto-arm until armed again' + (
                ' or management lost for %d s' % self.cfg.rearm_after_s
                if self.cfg.rearm_after_s else '')
        if self.lost_since is not None:
            s['management_lost_s'] = time.ticks_diff(time.ticks_ms(), self.lost_since) // 1000
        if self.dazzled:
            s['flash_skipped'] = self.dazzled
        if self.error:
            s['last_frame_error'] = self.error
        if self.missing:
            s['cannot_arm'] = self.missing
        return s
