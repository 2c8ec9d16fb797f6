"""The alarm: armed state, motion detection on the shared frames, alarm events, auto-arm.

Detection runs on the very JPEG frames the camera service already captures (luma from the DC
coefficients, no decoder, no second capture, no camera re-init). While armed it asks the camera
for `detect_fps` frames; when somebody streams, those frames are taken from the stream's capture.
The armed state changes only by command or by auto-arm, and survives a reboot (alarm.json).
Auto-arm: when every management server has been unreachable for `auto_arm_after_s` and the
Internet answers, the alarm arms itself; with no Internet it does not, and says why.
"""
import asyncio
import time

from firmware.core import store
from firmware.core.commands import CommandError
from firmware.core.events import ALARM, ARMED, CAMERA, INTERNET, MANAGEMENT

STATE_FILE = 'alarm.json'
NO_MEMORY_RETRY_S = 5


class AlarmEvent:
    def __init__(self, reason, score, frame):
        self.time = time.time()
        self.reason = reason        # 'motion' | 'test'
        self.score = score          # changed area, per mille
        self.frame = frame          # the JPEG that triggered (shared, not copied)

    def info(self):
        return {'time': self.time, 'reason': self.reason, 'score': self.score}


class Alarm:
    def __init__(self, cam, cfg, log, bus, internet=None, management_configured=False,
                 missing=None):
        self.cam = cam
        self.cfg = cfg
        self.log = log
        self.bus = bus
        self.internet = internet            # async fn() -> bool, the Internet probe
        self.auto = cfg.auto_arm and management_configured
        try:
            saved = store.load(STATE_FILE, {}) or {}
        except ValueError as e:             # a corrupt file: start disarmed, and say so
            log.error('alarm:', e)
            saved = {}
        if not isinstance(saved, dict):
            saved = {}
        self.state = saved.get('state', 'disarmed')
        if self.state not in ('disarmed', 'armed', 'auto-armed'):
            self.state = 'disarmed'
        self.commanded = saved.get('commanded', 'disarmed')
        self.missing = missing              # why detection cannot run: arming is refused
        if missing:
            log.error('alarm: cannot arm:', missing)
            self.state = 'disarmed'         # never "armed but blind" (the command is kept)
        self.events = []
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
        bus.on(CAMERA, self._camera)
        bus.on(MANAGEMENT, self._management)
        bus.on(INTERNET, self._internet)

    # --- state ------------------------------------------------------------------------------
    def armed(self):
        return self.state != 'disarmed'

    def _load(self):
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
            self._load()
        if commanded:
            self.commanded = 'armed' if state != 'disarmed' else 'disarmed'
        if state == self.state:
            if commanded:
                self._save()
            return
        self.state = state
        self._save()
        self.log('alarm', state, '(%s)' % why)
        self.bus.emit(ARMED, state, why)
        if self.detector:
            self.detector.reset()
        self._armed_ev.set()

    def _save(self):
        try:
            store.save(STATE_FILE, {'state': self.state, 'commanded': self.commanded})
        except OSError as e:
            self.log.error('alarm: cannot save state:', e)

    async def arm(self, args):
        self.set('armed', 'command')
        return 'alarm armed'

    async def disarm(self, args):
        self.set('disarmed', 'command')
        return 'alarm disarmed'

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
        self.events.append(ev.info())
        if len(self.events) > self.cfg.events_kept:
            self.events.pop(0)
        self.log.warn('ALARM', ev.reason, 'score %d' % ev.score)
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
                    self._load()
                except CommandError:        # armed from flash, but the code cannot load
                    self.set('disarmed', 'detection cannot load', commanded=False)
                    continue
            self.cam.need('motion', self.cfg.detect_fps)
            start = time.ticks_ms()
            seq = await self.cam.next_frame(seq)
            frame = self.cam.frame
            w, h = self.cam.size()
            try:
                d = self._luma(frame, w, h)
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
            w8 = self.extractor.w8
            h8 = self.extractor.h8
            self.score = d.feed(self.extractor.luma, w8, h8)
            self.frames += 1
            if d.triggered and self.armed():
                now = time.ticks_ms()
                if self.last_alarm is None or time.ticks_diff(now, self.last_alarm) >= self.cfg.event_gap_s * 1000:
                    self.last_alarm = now
                    self._raise(AlarmEvent('motion', self.score, frame if self.cam.jpeg else None))
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

    def _luma(self, frame, w, h):
        """Luma of `frame` into the extractor; returns the detector for its size. Buffers are
        (re)built when the frame size outgrows them: ValueError for a bad frame, MemoryError when
        the heap has no room for them."""
        x = self.extractor
        if x is None or x.max_w8 * 8 < w or x.max_h8 * 8 < h:
            from firmware.alarm.luma import LumaExtractor
            self.extractor = x = None
            self.extractor = x = LumaExtractor((w + 7) // 8, (h + 7) // 8)
        if self.cam.jpeg:
            x.extract_into(frame)          # allocates nothing per frame
        else:
            x.from_gray(frame, w, h)       # a GRAYSCALE camera, same detector
        d = self.detector
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
        if self.lost_since is not None:
            s['management_lost_s'] = time.ticks_diff(time.ticks_ms(), self.lost_since) // 1000
        if self.error:
            s['last_frame_error'] = self.error
        if self.missing:
            s['cannot_arm'] = self.missing
        return s
