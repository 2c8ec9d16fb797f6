#!/usr/bin/env python3
"""The firmware's own cost per frame, with the simulator's work left out (issue 13).

The whole firmware (precompiled, build/x64) runs on the MicroPython VM at VGA, 25 fps, as in
bench_stream. Prints tables; never asserts.

1. Whole process and per thread, timed (CPU ms from /proc, BENCH_SECONDS per row): per delivered
   and per captured frame at 0 (idle, per second), 0 armed, 1, 4 and 8 viewers, with the camera
   stand-in reading its files (as bench_stream) and from memory. The VM has two threads: the
   simulator's supervisor (power_on.py, 100 Hz: watchdog, exit codes, the camera counters file)
   and the firmware's. The firmware thread's time includes the kernel's (socket sends).
2. Firmware only, counted (callgrind, user-space x64 instructions; the camera from memory):
   windows of the running firmware (callgrind_control zero ... dump, so the boot is not in them),
   one file per thread so the supervisor thread is left out whole; in the firmware thread the
   camera stand-in's capture() is left out by subtracting its cost per call, counted alone
   (tools/sim/board/camera.py in a loop, 60 captures minus 20); the firmware's idle work
   (its timers, polls, watchdog feeding: counted with nobody watching) by its rate times the
   window's length. Per captured frame = (window - idle - captures x stand-in) / captures;
   per extra viewer per delivered frame = what k viewers cost beyond that / (delivered - captured).
   Armed: with 0 viewers the detector's rate (alarm.detect_fps, 5) paces the camera, so every
   captured frame is detected; with 1 viewer the camera runs at 25 fps and the detector takes
   detect_fps of those frames (about how many: the alarm's frames_checked, read just outside the
   window: inside, the two /status reads cost more than a detection). Under callgrind the camera
   does not keep 25 fps, so a frame at 25 fps is also computed: a captured frame with its first
   viewer + an armed 0-viewer captured frame (a detected frame with its capture) x detect_fps / 25.
3. Instructions per ms of this machine on the VM (a bytecode workload timed natively and counted),
   for the conversion to ms and the goals as instructions.

`python bench/bench_cost.py`; `BENCH_ONLY=cost make bench`. BENCH_COST_FRAMES: frames per
counted window (default 40); without valgrind part 2 is skipped with a note.
"""
import base64
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

from bench_stream import MP, MPY_PATH, TICK, cpu_seconds, table  # noqa: E402
from sim.simulate import Board  # noqa: E402
from testkit import callgrind as cg  # noqa: E402
from testkit.helpers import MjpegReader, free_port  # noqa: E402

SECONDS = float(os.environ.get('BENCH_SECONDS', '5'))
CG_FRAMES = int(os.environ.get('BENCH_COST_FRAMES', '40'))
VIEWERS = (1, 4, 8)
CAPTURE_GOAL_MS = 0.3
# mjpg-streamer's whole cost per extra viewer per delivered frame, measured side by side on
# this machine for issue 13 (VGA, 25 fps, same frames, 4-8 viewers); mjpg-streamer is neither
# on PyPI nor in Debian, so the figure is a constant here
MJPG_EXTRA_MS = 0.02
ADMIN = ('admin', 'bench-password')
DETECT_FPS = 5  # alarm.detect_fps's default (firmware/config/schema.py)

# the camera stand-in's capture() alone: n captures from memory, no sensor pacing, no counters
# file (the supervisor thread writes that in the firmware's runs); 'copy': what the driver adds,
# each frame copied into a new bytes object (mp_obj_new_bytes: allocation, copy, hash), the last
# one let go first as the camera service does
CAPTURE_LOOP = r'''
import sys, camera
camera._write_stats = lambda: None
camera.init(0, format=camera.JPEG, framesize=camera.FRAME_VGA)
mode, n = sys.argv[1], int(sys.argv[2])
i = 0
f = None
while i < n:
    if mode == 'copy':
        f = None
        f = bytes(memoryview(camera.capture()))
    else:
        f = camera.capture()
    i += 1
'''

# bytecode of the firmware's kind (attributes, calls, dicts, bytes formatting, asyncio events
# between two tasks), to convert instructions to this machine's ms
CALIBRATE = r'''
import sys, time, asyncio

class Cam:
    def __init__(self):
        self.seq = 0
        self.frame = b'x' * 30000
        self.ev = asyncio.Event()
        self.stats = {'captures': 0}

async def producer(c, n):
    for i in range(n):
        c.seq += 1
        c.stats['captures'] += 1
        c.ev.set()
        c.ev.clear()
        await asyncio.sleep_ms(0)

async def consumer(c, n, out):
    seq = 0
    while seq < n:
        await c.ev.wait()
        seq = c.seq
        h = b'\r\n--%s\r\nContent-Length: %d\r\nX-Timestamp: %d.%06d\r\n\r\n' % (
            b'boundary', len(c.frame), seq // 1000, seq % 1000)
        out.append(len(h) + len(memoryview(c.frame)[:100]))
        if len(out) > 50:
            out.clear()

def run(n):
    c = Cam()
    out = []
    asyncio.run(asyncio.gather(consumer(c, n, out), producer(c, n)))

if sys.argv[1] == 'time':
    n = int(sys.argv[2])
    best = 1 << 40
    for _ in range(15):
        t0 = time.ticks_us()
        run(n)
        best = min(best, time.ticks_diff(time.ticks_us(), t0))
    print(best)
else:
    run(int(sys.argv[1]))
'''


class CountedBoard(Board):
    """The VM under callgrind, one output file per thread."""

    def __init__(self, flash, out, **kw):
        super().__init__(flash, **kw)
        self.out = out

    def command(self):
        return cg.prefix(self.out, threads=True) + super().command()


def start(flash, memory, counted=None):
    ports = [free_port() for _ in range(3)]
    os.makedirs(os.path.join(flash, '.sim'), exist_ok=True)
    cfg = {'http': {'bind': '127.0.0.1', 'control_port': ports[0], 'stream_port': ports[1],
                    'admin_port': ports[2], 'max_viewers': 16},
           'admin': {'password': ADMIN[1]}, 'camera': {'framesize': 'VGA', 'max_fps': 25},
           'internet': {'probe': []}}
    with open(os.path.join(flash, 'config.json'), 'w') as f:
        json.dump(cfg, f)
    with open(os.path.join(flash, '.sim', 'camera.json'), 'w') as f:
        json.dump({'memory': bool(memory)}, f)
    env = {'MICROPYPATH': MPY_PATH}
    if counted:
        b = CountedBoard(flash, counted, env=dict(env, **cg.SEED), once=True)
    else:
        b = Board(flash, env=env, once=True)
    b.start()
    if not b.wait_ready(ports, timeout=300 if counted else 30):
        b.stop()
        raise RuntimeError('firmware did not start:\n' + b.console()[-2000:])
    return b, ports


def admin(port, path, data=None):
    req = urllib.request.Request('http://127.0.0.1:%d%s' % (port, path), data=data)
    req.add_header('Authorization', 'Basic ' + base64.b64encode(('%s:%s' % ADMIN).encode()).decode())
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def arm(b, port, timeout=60):
    admin(port, '/action/arm', b'')
    # armed: the detector asks for frames; wait until they come
    c0 = captures(b)
    end = time.monotonic() + timeout
    while captures(b) < c0 + 3 and time.monotonic() < end:
        time.sleep(0.1)


def captures(b):
    return (b.read('camera_stats', {}) or {}).get('captures', 0)


def threads_cpu(pid):
    """{thread id: CPU seconds (user + system)} of every thread of the process."""
    out = {}
    for tid in os.listdir('/proc/%d/task' % pid):
        try:
            with open('/proc/%d/task/%s/stat' % (pid, tid)) as f:
                fields = f.read().rsplit(')', 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / TICK
    return out


class Viewers:
    """n viewers reading the stream in threads; frames are counted only while `counting`."""

    def __init__(self, port, n, limit_s):
        self.counts = [0] * n
        self.seen = [0] * n         # frames received, counted or not
        self.counting = False
        self.stop_at = time.monotonic() + limit_s
        self.readers = [MjpegReader(port, '/stream', timeout=60) for _ in range(n)]
        self.threads = [threading.Thread(target=self._watch, args=(i,), daemon=True)
                        for i in range(n)]
        for t in self.threads:
            t.start()

    def _watch(self, i):
        try:
            r = self.readers[i]
            while time.monotonic() < self.stop_at:
                r.frame()
                self.seen[i] += 1
                if self.counting:
                    self.counts[i] += 1
        except (OSError, EOFError):
            pass

    def wait(self, frames, timeout):
        """Until the first viewer has counted `frames` (bounded by timeout)."""
        end = time.monotonic() + timeout
        while self.counts[0] < frames and time.monotonic() < end:
            time.sleep(0.01)

    def warm(self, frames, timeout):
        """Until every viewer has received `frames`."""
        end = time.monotonic() + timeout
        while min(self.seen) < frames and time.monotonic() < end:
            time.sleep(0.01)

    def close(self):
        self.stop_at = 0
        for r in self.readers:
            try:
                r.close()
            except OSError:
                pass
        for t in self.threads:
            t.join(10)


def idle_viewers(port, timeout=20):
    end = time.monotonic() + timeout
    while admin(port, '/status')['stream']['viewers'] and time.monotonic() < end:
        time.sleep(0.1)


# --- 1: timed ----------------------------------------------------------------------------------

def timed(tmp, memory):
    """Rows of the timed table for one camera mode."""
    b, ports = start(os.path.join(tmp, 'timed-%s' % ('memory' if memory else 'files')), memory)
    rows = []
    mode = 'memory' if memory else 'files'

    def window(n, seconds):
        v = Viewers(ports[1], n, seconds + 60) if n else None
        if v:
            v.warm(3, 30)
        c0, p0, t0 = captures(b), cpu_seconds(b.pid), threads_cpu(b.pid)
        w0 = time.monotonic()
        if v:
            v.counting = True
        time.sleep(seconds)
        if v:
            v.counting = False
        c1, p1, t1 = captures(b), cpu_seconds(b.pid), threads_cpu(b.pid)
        wall = time.monotonic() - w0
        if v:
            v.close()
            idle_viewers(ports[2])
        sup = t1.get(b.pid, 0) - t0.get(b.pid, 0)
        fw = sum(t1[t] - t0.get(t, 0) for t in t1 if t != b.pid)
        return (sum(v.counts) if v else 0), c1 - c0, p1 - p0, fw, sup, wall

    try:
        d, c, p, fw, sup, wall = window(0, SECONDS)
        rows.append([mode, 'idle', '-', '-', '%.1f /s' % (1000 * p / wall),
                     '%.1f /s' % (1000 * fw / wall), '%.1f /s' % (1000 * sup / wall), '-', '-'])
        first = None
        for n in VIEWERS:
            d, c, p, fw, sup, wall = window(n, SECONDS)
            if first is None:
                first = fw / max(c, 1)      # firmware thread per captured frame, one viewer
                extra = '-'
            else:
                extra = '%.3f' % (1000 * (fw - first * c) / max(d - c, 1))
            rows.append([mode, '%d viewer%s' % (n, 's' if n > 1 else ''), '%.1f' % (d / wall / n),
                         c, '%.2f' % (1000 * p / max(d, 1)), '%.2f' % (1000 * fw / max(d, 1)),
                         '%.2f' % (1000 * sup / max(d, 1)), '%.2f' % (1000 * p / max(c, 1)), extra])
        arm(b, ports[2])
        d, c, p, fw, sup, wall = window(0, SECONDS)
        rows.append([mode, 'armed, 0 viewers', '-', c, '-', '-', '-',
                     '%.2f (fw %.2f)' % (1000 * p / max(c, 1), 1000 * fw / max(c, 1)), '-'])
    finally:
        b.stop()
    return rows


# --- 2: counted --------------------------------------------------------------------------------

def standin_capture(tmp, mode='memory'):
    """Instructions of one camera.capture() of the stand-in (from memory, VGA); mode 'copy':
    plus the driver's copy of the frame into the heap."""
    sim = os.path.join(tmp, 'standin')
    os.makedirs(sim, exist_ok=True)
    with open(os.path.join(sim, 'camera.json'), 'w') as f:
        json.dump({'memory': True, 'fps': 100000}, f)
    script = os.path.join(tmp, 'capture_loop.py')
    with open(script, 'w') as f:
        f.write(CAPTURE_LOOP)
    env = dict(os.environ, MICROPYPATH=MPY_PATH, ESP32SIM=sim)
    n = [cg.count([MP, script, mode, str(k)], os.path.join(tmp, 'cg.%s.%d' % (mode, k)), env=env)
         for k in (20, 60)]
    return (n[1] - n[0]) / 40


def calibrate(tmp):
    """x64 instructions per ms of this machine's CPU, for VM bytecode of the firmware's kind."""
    script = os.path.join(tmp, 'calibrate.py')
    with open(script, 'w') as f:
        f.write(CALIBRATE)
    env = dict(os.environ, MICROPYPATH=MPY_PATH)
    n = [cg.count([MP, script, str(k)], os.path.join(tmp, 'cg.cal.%d' % k), env=env)
         for k in (2000, 6000)]
    per_round = (n[1] - n[0]) / 4000.0          # the VM's start cancels out
    us = int(subprocess.run([MP, script, 'time', '6000'], capture_output=True, text=True,
                            timeout=120, env=env, check=True).stdout.split()[-1])
    return per_round / (us / 6000.0 / 1000.0)


def counted(tmp):
    """{what: (instructions in the firmware thread, supervisor, captures, delivered, seconds)}."""
    out = os.path.join(tmp, 'cg.fw')
    b, ports = start(os.path.join(tmp, 'counted'), True, counted=out)
    res = {}

    def checked():
        return admin(ports[2], '/status').get('alarm', {}).get('frames_checked', 0)

    def window(what, n, frames=None, seconds=None):
        v = Viewers(ports[1], n, 600) if n else None
        if v:
            v.warm(3, 120)
        k0 = checked() if what in ('armed', 'armed1') else 0
        cg.window(b.pid, out, 'zero')
        c0 = captures(b)
        w0 = time.monotonic()
        if v:
            v.counting = True
            v.wait(frames, 300)
            v.counting = False
        else:
            time.sleep(seconds)
        wall = time.monotonic() - w0
        c1 = captures(b)
        files = cg.window(b.pid, out, 'dump')
        if what in ('armed', 'armed1'):     # about the frames detected (read outside the window)
            res[what + ' detected'] = checked() - k0
        if v:
            v.close()
            idle_viewers(ports[2], 60)
        # thread 1 is the VM's main thread: power_on.py's supervisor; the firmware runs in 2
        fw = sum(cg.summary(p) for t, p in files.items() if t != 1)
        res[what] = (fw, cg.summary(files[1]) if 1 in files else 0, c1 - c0,
                     sum(v.counts) if v else 0, wall)
        if what in ('armed', 'armed1'):
            res[what + ' native'] = sum(cg.native(p) for t, p in files.items() if t != 1)

    try:
        time.sleep(2)
        window('idle', 0, seconds=SECONDS)
        for n in VIEWERS:
            window(n, n, frames=CG_FRAMES)
        arm(b, ports[2], 120)
        window('armed', 0, seconds=max(SECONDS, CG_FRAMES / 5.0))
        # armed with a viewer: the camera at 25 fps, the detector on detect_fps (5) of them
        window('armed1', 1, frames=CG_FRAMES)
    finally:
        b.stop()
    return res


def firmware_only(res, capture):
    """Per-frame instructions of the firmware alone, from the counted windows."""
    fw0, _, _, _, wall0 = res['idle']
    rate = fw0 / wall0                 # idle work per second

    def own(what):
        fw, sup, caps, deliv, wall = res[what]
        return fw - rate * wall - capture * caps, caps, deliv
    o1, c1, _ = own(1)
    per_capture = o1 / max(c1, 1)      # a captured frame with its first viewer
    out = {'capture': per_capture}
    for n in VIEWERS[1:]:
        o, c, d = own(n)
        out[n] = (o - per_capture * c) / max(d - c, 1)
    oa, ca, _ = own('armed')
    out['armed'] = oa / max(ca, 1)
    out['native'] = res.get('armed native', 0) / max(ca, 1)
    out['armed detected'] = res.get('armed detected', 0), ca
    o1a, c1a, _ = own('armed1')
    out['armed1'] = o1a / max(c1a, 1)
    out['armed1 native'] = res.get('armed1 native', 0) / max(c1a, 1)
    out['armed1 detected'] = res.get('armed1 detected', 0), c1a
    return out


def main():
    tmp = tempfile.mkdtemp(prefix='bench-cost-')
    rows = timed(tmp, False) + timed(tmp, True)
    table('Whole VM process and its threads, VGA, camera 25 fps, CPU ms (user + system) per delivered '
          'frame (idle: per second; %.0f s per row)' % SECONDS,
          ['camera', 'viewers', 'fps each', 'captures', 'process ms/frame', 'firmware thread',
           'supervisor thread', 'process ms/captured', 'fw thread per extra viewer'], rows)
    if not cg.available():
        print('\n  (valgrind not installed: no instruction counts; apt-get install valgrind)')
        return
    ipms = calibrate(tmp)
    capture = standin_capture(tmp)
    copy = standin_capture(tmp, 'copy') - capture
    res = counted(tmp)
    rows = []
    for what in ['idle'] + list(VIEWERS) + ['armed', 'armed1']:
        fw, sup, caps, deliv, wall = res[what]
        name = {'idle': 'idle', 'armed': 'armed', 'armed1': 'armed, 1 viewer'}.get(what)
        rows.append([name or '%d viewers' % what, '%.1f' % wall,
                     caps, deliv, '{:,}'.format(fw), '{:,}'.format(sup)])
    table('Counted windows (callgrind, camera from memory; instructions per thread)',
          ['window', 'seconds', 'captures', 'delivered', 'firmware thread', 'supervisor thread'], rows)
    own = firmware_only(res, capture)
    cap_goal = CAPTURE_GOAL_MS * ipms
    extra_goal = MJPG_EXTRA_MS * ipms

    def line(what, instr, goal_instr, goal):
        ms = instr / ipms
        row = [what, '{:,.0f}'.format(instr), '%.3f' % ms, '%.2f' % (instr / 240000.0)]
        if goal is None:
            return row + ['-', '-']
        return row + ['{:,.0f} ({})'.format(goal_instr, goal),
                      'met' if instr <= goal_instr else 'missed x%.1f' % (instr / goal_instr)]
    det0, cap0 = own['armed detected']
    det1, cap1 = own['armed1 detected']
    rows = [line('captured frame, with its first viewer', own['capture'], cap_goal, '0.3 ms'),
            # with nobody watching, the detector's rate (alarm.detect_fps) is the camera's: every
            # captured frame is a detected frame
            line('captured frame, armed, 0 viewers (about %d detected of %d captured)' % (det0, cap0),
                 own['armed'], cap_goal, '0.3 ms'),
            line('  of which the detection\'s native (viper) code', own['native'], cap_goal, None),
            line('  the rest (bytecode)', own['armed'] - own['native'], cap_goal, '0.3 ms'),
            line('captured frame, armed, 1 viewer (about %d detected of %d captured)' % (det1, cap1),
                 own['armed1'], cap_goal, '0.3 ms'),
            line('  of which the detection\'s native (viper) code', own['armed1 native'],
                 cap_goal, None),
            line('captured frame at 25 fps, armed, detection at %d fps: first viewer + %d/25 of '
                 'an armed 0-viewer frame' % (DETECT_FPS, DETECT_FPS),
                 own['capture'] + own['armed'] * DETECT_FPS / 25.0, cap_goal, '0.3 ms')]
    for n in VIEWERS[1:]:
        rows.append(line('extra viewer, per delivered frame (%d viewers)' % n, own[n], extra_goal,
                         'mjpg-streamer %.2f ms' % MJPG_EXTRA_MS))
    table('Firmware only (the stand-in\'s capture(), the supervisor thread and idle work left out)',
          ['per', 'x64 instructions', 'ms here', 'ms at 240 M instr/s', 'goal (instructions)',
           'verdict'], rows)
    print('  this machine: %s VM instructions per ms (bytecode workload, best of 15); the stand-in\'s '
          'capture(): %s instructions per call; idle firmware: %s instructions per second'
          % ('{:,.0f}'.format(ipms), '{:,.0f}'.format(capture),
             '{:,.0f}'.format(res['idle'][0] / res['idle'][4])))
    print('  left out as not the firmware\'s: the driver\'s copy of each frame into the heap '
          '(mp_obj_new_bytes: allocation, copy, hash; C in the driver on a board), here %s '
          'instructions per VGA frame' % '{:,.0f}'.format(copy))
    mj = MJPG_EXTRA_MS * ipms
    print('  extra viewer / mjpg-streamer\'s whole cost per extra viewer (%.2f ms): %s' % (
        MJPG_EXTRA_MS, ', '.join('%d viewers %.1f' % (n, own[n] / mj) for n in VIEWERS[1:])))


if __name__ == '__main__':
    main()
