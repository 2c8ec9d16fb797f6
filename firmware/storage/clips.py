"""Clips: the seconds before an alarm and after it, as MJPEG AVI files on the card.

A collector takes the camera's frames at the clip rate into a pre-trigger ring: references to
the very JPEGs the camera service captured, no copy, bounded by `pre_s` and by `pre_bytes`. An
alarm (or the record_start command) opens a clip, moves the ring into the write queue and keeps
adding frames until `post_s` after the last motion (at most `max_s`). A writer task empties the
queue in slices of `slice` bytes, yielding to the loop between them, so the stream and the
detector keep their rate while a clip is written. A slot the camera missed becomes an empty
chunk, so a clip plays at its real speed.

Files: <mount>/clips/YYYY-MM-DD/HHMMSS-<reason>.avi. `.open` names the clip being written; at
the next mount a clip left open by a power cut or a pulled card is repaired (avi.repair) and plays
up to its last whole frame. Retention deletes the oldest clips while free space is below
`reserve_mb`, never the clip being written.

Time-lapse (`timelapse_s` > 0): one frame every `timelapse_s` into <day>/timelapse.avi, played
at `fps`; written between clip frames, finished (idx1) when the day is over.
"""
import asyncio
import os
import struct
import time

from firmware.core import clock
from firmware.storage import avi

DIR = 'clips'


def day_and_name(t, reason):
    y, mo, d, h, mi, s = time.localtime(int(t))[:6]
    return '%04d-%02d-%02d' % (y, mo, d), '%02d%02d%02d-%s.avi' % (h, mi, s, reason)


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


class Recorder:
    def __init__(self, cam, card, cfg, log, motion=None, on_clip=None):
        self.cam = cam
        self.card = card
        self.cfg = cfg
        self.log = log
        self.motion = motion or (lambda: False)   # fn() -> True while the detector sees motion
        self.on_clip = on_clip                    # fn(info dict) when a clip is complete
        self.root = card.mount_point + '/' + DIR
        self.period = 1000 // cfg.fps
        # the index of the longest clip (pre-roll, max_s, a second of empty slots), allocated
        # once: 16 bytes a frame, ~10 KB at 60 s and 10 fps
        self.index = bytearray(16 * (cfg.fps * (cfg.pre_s + cfg.max_s + 1) + 2))
        self.ring = []
        self.ring_bytes = 0
        self.queue = []            # frames (bytes) to write; None: a slot the camera missed
        self.queue_bytes = 0
        self.writer = None         # avi.Writer of the clip being written
        self.f = None
        self.path = None
        self.reason = None
        self.started = 0           # time.time() of the trigger
        self.until = 0             # ticks_ms: record up to here (extended by motion)
        self.deadline = 0          # ticks_ms: max_s reached
        self.pre = 0               # frames of the clip from before the trigger
        self.stopping = False      # no more frames for this clip: close once the queue is written
        self.last = None           # info of the last complete clip
        self.repairing = False     # a clip cut short is being finished
        self.lapse = None          # the next time-lapse frame to write
        self.lapse_path = None     # today's time-lapse file
        self.running = False       # the tasks run: repairs yield to the loop
        self._ev = asyncio.Event()
        self.stats = {'clips': 0, 'frames': 0, 'gaps': 0, 'dropped': 0, 'failed': 0,
                      'deleted': 0, 'repaired': 0, 'bytes': 0, 'worst_write_ms': 0,
                      'lapse_frames': 0}
        card.users.append(self._card_changed)

    # --- starting and stopping ---------------------------------------------------------------
    def recording(self):
        return self.writer is not None and not self.stopping

    def trigger(self, reason, manual=False):
        """Start a clip (or extend the one running). -> text for the caller; OSError if no card."""
        now = time.ticks_ms()
        post = (self.cfg.max_s if manual else self.cfg.post_s) * 1000
        if self.recording():
            if time.ticks_diff(time.ticks_add(now, post), self.until) > 0:
                self.until = time.ticks_add(now, post)
            return 'recording %s' % self.path
        if self.writer is not None:
            # the last clip is being finished: it goes on instead, with the frames taken meanwhile
            if time.ticks_diff(now, self.deadline) >= 0 or self.writer.full():
                raise OSError('the last clip is at its maximum length, try again in a moment')
            self.stopping = False
            self.until = time.ticks_add(now, post)
            self.queue.extend(self.ring)
            self.queue_bytes += self.ring_bytes
            self.ring = []
            self.ring_bytes = 0
            self._ev.set()
            return 'recording %s' % self.path
        if not self.card.mounted():
            raise OSError('no clip: card %s' % self.card.state)
        if self.repairing:
            raise OSError('no clip: repairing the clip the card was pulled from, try again in a moment')
        if not self.keep_free():
            raise OSError('no clip: card full (less than %d MB free, no clip left to delete)'
                          % self.cfg.reserve_mb)
        self.started = time.time()
        day, name = day_and_name(self.started, reason)
        path = '%s/%s/%s' % (self.root, day, name)
        try:
            self._mkdir(self.root)
            self._mkdir(self.root + '/' + day)
            # a name already taken (same second, or a clock that restarted at 2000-01-01 after a
            # power cut before NTP) gets a number: never open() over an earlier clip
            n = 1
            while _exists(path) and n < 100:
                n += 1
                path = '%s/%s/%s-%d.avi' % (self.root, day, name[:-4], n)
            with open(self.root + '/.open', 'w') as f:
                f.write(path)
            self.f = open(path, 'wb')
            w, h = self.cam.size()
            self.writer = avi.Writer(self.f, w, h, self.cfg.fps, self.index)
        except OSError as e:
            self._failed(e)
            raise OSError('no clip: %s' % e)
        self.path = path
        self.reason = reason
        self.until = time.ticks_add(now, post)
        self.deadline = time.ticks_add(now, self.cfg.max_s * 1000)
        # the pre-trigger frames become the clip's first frames: the list moves, no frame is copied
        self.pre = len(self.ring)
        self.queue = self.ring
        self.queue_bytes = self.ring_bytes
        self.ring = []
        self.ring_bytes = 0
        self.log('clip: recording', path, '(%s, %d frames before the trigger)' % (reason, len(self.queue)))
        self._ev.set()
        return 'recording %s' % path

    def stop(self):
        if not self.recording():
            return 'not recording'
        self.stopping = True
        self._ev.set()
        return 'stopping %s' % self.path

    @staticmethod
    def _mkdir(p):
        try:
            os.mkdir(p)
        except OSError as e:
            if e.errno != 17:     # EEXIST
                raise

    # --- frames in -----------------------------------------------------------------------------
    async def run_collector(self):
        """Take frames at the clip rate: into the ring, or into the clip being recorded."""
        cam = self.cam
        period = self.period
        self.running = True
        cam.need('clips', self.cfg.fps)
        seq = cam.seq
        due = None
        lapse = self.cfg.timelapse_s * 1000
        next_lapse = time.ticks_ms()
        while True:
            seq = await cam.next_frame(seq)
            frame = cam.frame
            t = cam.stamp_ms
            if due is None:
                due = t
            late = time.ticks_diff(t, due)
            if late < -(period // 2):
                continue         # the camera runs faster (a viewer): keep one frame per slot
            missed = late // period if late >= period else 0
            if missed > self.cfg.fps:  # the camera was off or failing: start a new timeline
                missed = 0
                due = t
            due = time.ticks_add(due, (missed + 1) * period)
            self._take(frame, missed)
            if lapse and time.ticks_diff(t, next_lapse) >= 0:
                next_lapse = time.ticks_add(t, lapse)
                self.lapse = frame
                self._ev.set()
            frame = None

    def _take(self, frame, missed):
        if self.writer is None or self.stopping:
            self._to_ring(frame)
            return
        for _ in range(missed):
            self.queue.append(None)
            self.stats['gaps'] += 1
        if self.queue_bytes + len(frame) > 2 * self.cfg.pre_bytes:
            self.stats['dropped'] += 1    # the card cannot keep up: bounded, never the heap
        else:
            self.queue.append(frame)
            self.queue_bytes += len(frame)
        now = time.ticks_ms()
        if self.reason != 'manual' and self.motion():
            self.until = time.ticks_add(now, self.cfg.post_s * 1000)
        if time.ticks_diff(now, self.until) >= 0 or time.ticks_diff(now, self.deadline) >= 0 \
                or len(self.queue) + self.writer.frames >= self.cfg.max_s * self.cfg.fps:
            self.stopping = True
        self._ev.set()

    def _to_ring(self, frame):
        r = self.ring
        r.append(frame)
        self.ring_bytes += len(frame)
        keep = self.cfg.pre_s * self.cfg.fps
        while r and (len(r) > keep or self.ring_bytes > self.cfg.pre_bytes):
            self.ring_bytes -= len(r.pop(0))

    # --- frames out ----------------------------------------------------------------------------
    async def run_writer(self):
        while True:
            if not self.queue:
                if self.writer is not None and self.stopping:
                    self._close()
                    continue
                if self.lapse is not None:
                    frame, self.lapse = self.lapse, None
                    try:
                        await self._lapse_write(frame)
                    except OSError as e:
                        self.log.warn('clip: time-lapse write failed:', e)
                        self._card_error(e)
                    frame = None
                    continue
                self._ev.clear()
                await self._ev.wait()
                continue
            frame = self.queue.pop(0)
            if frame is not None:
                self.queue_bytes -= len(frame)
            if self.writer is None:
                continue         # the clip was abandoned (card gone): the frame is let go
            try:
                await self._write_frame(frame)
            except OSError as e:
                self._failed(e)
            frame = None

    async def _write_frame(self, frame):
        w = self.writer
        if w.full():
            self.stopping = True
            return
        n = len(frame) if frame is not None else 0
        self._timed(w.chunk_header(n))
        if n:
            mv = memoryview(frame)
            step = self.cfg.slice
            for off in range(0, n, step):
                await asyncio.sleep_ms(0)
                if self.writer is not w:
                    return
                self._timed(mv[off:off + step])
            if n & 1:
                self._timed(b'\0')
        self.stats['frames'] += 1
        self.stats['bytes'] += 8 + n
        if w.frames % self.cfg.fps == 0:
            # FAT writes a file's size and cluster chain only on sync: once a second, so a power
            # cut or a pulled card loses at most the last second (repair() finds the rest)
            self.f.flush()
        if w.frames % (self.cfg.fps * 2) == 0 and not self.keep_free():
            self.stopping = True     # end the clip while there is room for its index

    def _timed(self, data):
        t = time.ticks_ms()
        self.f.write(data)
        ms = time.ticks_diff(time.ticks_ms(), t)
        if ms > self.stats['worst_write_ms']:
            self.stats['worst_write_ms'] = ms

    def _close(self):
        w = self.writer
        path = self.path
        try:
            w.close()
            self.f.close()
            os.remove(self.root + '/.open')
        except OSError as e:
            self._failed(e)
            return
        self.writer = self.f = None
        self.stopping = False
        self.stats['clips'] += 1
        self.last = {'path': path, 'reason': self.reason, 'time': self.started,
                     'frames': w.frames, 'pre': self.pre, 'fps': self.cfg.fps}
        self.log('clip: saved', path, '(%d frames, %.1f s)' % (w.frames, w.frames / self.cfg.fps))
        self.keep_free()
        if self.on_clip:
            self.on_clip(self.last)

    def _failed(self, e):
        """A card error while writing: the clip ends here; the card decides what it means."""
        self.stats['failed'] += 1
        self.log.warn('clip: write failed:', e, self.path or '')
        f = self.f
        self.writer = self.f = None
        self.stopping = False
        self.queue = []
        self.queue_bytes = 0
        if f is not None:
            try:
                f.close()
            except OSError:
                pass
        self._card_error(e)

    def _card_error(self, e):
        if getattr(e, 'errno', None) == 28:   # ENOSPC
            self.card.full(True)
        else:
            self.card.lost(e)

    # --- time-lapse: one frame every timelapse_s into <day>/timelapse.avi ------------------------
    async def _lapse_write(self, frame):
        """Append one frame to today's time-lapse. The file stays open (RIFF size 0: players
        read its chunks in order) until the day is over; then it is finished like a cut clip."""
        if not self.card.mounted() or self.repairing:
            return
        day = day_and_name(time.time(), 'x')[0]
        path = '%s/%s/timelapse.avi' % (self.root, day)
        if path != self.lapse_path:
            await self._finish_lapses(day)
            self.lapse_path = path
        self._mkdir(self.root)
        self._mkdir(self.root + '/' + day)
        try:
            os.stat(path)
        except OSError:
            w, h = self.cam.size()
            with open(path, 'wb') as f:
                f.write(avi.header(w, h, self.cfg.fps, 0, avi.OPEN, 4, 0))
        n = len(frame)
        head = bytearray(8)
        head[:4] = avi.CHUNK
        struct.pack_into('<I', head, 4, n)
        with open(path, 'ab') as f:
            f.write(head)
            mv = memoryview(frame)
            for off in range(0, n, self.cfg.slice):
                f.write(mv[off:off + self.cfg.slice])
                await asyncio.sleep_ms(0)
            if n & 1:
                f.write(b'\0')
        self.stats['lapse_frames'] += 1

    async def _finish_lapses(self, today):
        """Finish the time-lapse files of the days before today (at boot, at midnight)."""
        try:
            days = os.listdir(self.root)
        except OSError:
            return
        for d in days:
            if d == today or d[:1] == '.':
                continue
            p = '%s/%s/timelapse.avi' % (self.root, d)
            try:
                size = os.stat(p)[6]
                with open(p, 'r+b') as f:
                    for n in avi.repair_steps(f, size):
                        await asyncio.sleep_ms(0)
            except (OSError, ValueError):
                continue
            if n is not None:
                self.log('clip: time-lapse of', d, 'finished (%d frames)' % n)

    # --- the card ------------------------------------------------------------------------------
    def _card_changed(self, mounted):
        if mounted:
            if self.running:
                asyncio.create_task(self.repair_soon())
            else:
                self.repair()
        else:
            self.writer = self.f = None
            self.stopping = False
            self.queue = []
            self.queue_bytes = 0

    def repair(self):
        """Finish the clip a power cut or a pulled card left open (at boot: all at once)."""
        for _ in self._repair():
            pass

    async def repair_soon(self):
        """The same while the loop runs (a card put back): a turn for the others every 32 chunks."""
        for _ in self._repair():
            await asyncio.sleep_ms(0)

    def _repair(self):
        mark = self.root + '/.open'
        try:
            with open(mark) as f:
                path = f.read()
        except OSError:
            return
        self.repairing = True
        try:
            size = os.stat(path)[6]
            with open(path, 'r+b') as f:
                for n in avi.repair_steps(f, size):
                    yield
            if n is not None:
                self.stats['repaired'] += 1
                self.log.warn('clip: repaired', path, '(%d frames kept)' % n)
        except (OSError, ValueError) as e:
            self.log.warn('clip: cannot repair', path, '-', e)
        finally:
            self.repairing = False
        try:
            os.remove(mark)
        except OSError:
            pass

    def clips(self):
        """Paths of every clip, oldest first."""
        out = []
        try:
            days = sorted(os.listdir(self.root))
        except OSError:
            return out
        for d in days:
            if d[:1] == '.':
                continue
            try:
                names = sorted(os.listdir(self.root + '/' + d))
            except OSError:
                continue
            for n in names:
                if n.endswith('.avi'):
                    out.append(self.root + '/' + d + '/' + n)
        return out

    def keep_free(self):
        """Delete the oldest clips while free space is below the reserve; False: still below."""
        reserve = self.cfg.reserve_mb << 20
        if self.card.free() >= reserve:
            self.card.full(False)
            return True
        for p in self.clips():
            if (p == self.path and self.writer is not None) or p == self.lapse_path:
                continue
            try:
                os.remove(p)
            except OSError:
                continue
            self.stats['deleted'] += 1
            self.log('clip: deleted', p, '(card space below %d MB)' % self.cfg.reserve_mb)
            day = p.rsplit('/', 1)[0]
            try:
                if not os.listdir(day):
                    os.rmdir(day)
            except OSError:
                pass
            if self.card.free() >= reserve:
                self.card.full(False)
                return True
        self.card.full(True)
        return False

    def delete(self, path):
        if path == self.path and self.writer is not None:
            raise OSError('this clip is being recorded')
        os.remove(path)
        self.stats['deleted'] += 1

    def status(self):
        last = self.last
        if last:
            last = dict(last, time=clock.unix(last['time']))   # seconds since 1970, None: not set
        s = {'recording': self.path if self.writer is not None else None,
             'ring_frames': len(self.ring), 'ring_bytes': self.ring_bytes,
             'queued': len(self.queue), 'fps': self.cfg.fps, 'last': last}
        s.update(self.stats)
        return s
