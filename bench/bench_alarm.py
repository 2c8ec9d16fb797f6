"""Alarm benchmark: what motion detection costs the stream, and how fast an alarm reaches people.

The whole firmware (precompiled build/x64 when `make build` made it, else the sources) on the
MicroPython VM with the simulated camera, the reference LFCP server and the fake Telegram Bot API
on 127.0.0.1. Prints tables; never asserts.

1. Stream at VGA, camera 25 fps, 4 viewers: fps per viewer disarmed and armed (detection at
   5 fps on the shared frames), captures per streamed frame, VM CPU per streamed frame; and the
   same unpaced (the sensor as fast as it goes, one viewer), where detection's CPU shows as fps.
2. Latency: the scene starts moving (camera.json motion=true) -> the MOAL at the LFCP server and
   the photo at the fake Telegram, idle and with 4 viewers. It includes up to ~100 ms for the
   simulated camera to notice the control file, and the detector's min_frames (2) at 5 fps.

BENCH_SECONDS: length of each stream measurement (default 4); BENCH_RUNS: latency runs (5).
"""
import base64
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

from bench_stream import cpu_seconds, table  # noqa: E402
from sim.simulate import Board  # noqa: E402
from testkit.helpers import MjpegReader, free_port  # noqa: E402
from testkit.peers import Peers  # noqa: E402

SECONDS = float(os.environ.get('BENCH_SECONDS', '4'))
RUNS = int(os.environ.get('BENCH_RUNS', '5'))
BUILD = os.path.join(ROOT, 'build', 'x64')
PASSWORD = 'bench-password'
NAME = 'benchcam'


class Device:
    def __init__(self, flash, overrides, camera=None):
        self.ports = [free_port() for _ in range(3)]
        cfg = {'device': {'name': NAME},
               'http': {'bind': '127.0.0.1', 'control_port': self.ports[0],
                        'stream_port': self.ports[1], 'admin_port': self.ports[2]},
               'admin': {'password': PASSWORD}, 'camera': {'framesize': 'VGA', 'max_fps': 25},
               'internet': {'probe': []}, 'alarm': {'detect_fps': 5, 'auto_arm': False}}
        for k, v in overrides.items():
            cfg.setdefault(k, {}).update(v)
        os.makedirs(os.path.join(flash, '.sim'), exist_ok=True)
        with open(os.path.join(flash, 'config.json'), 'w') as f:
            json.dump(cfg, f)
        if camera:
            with open(os.path.join(flash, '.sim', 'camera.json'), 'w') as f:
                json.dump(camera, f)
        self.mpy = os.path.isdir(BUILD)
        self.board = Board(flash, mpy=self.mpy, once=True)
        self.board.start()
        if not self.board.wait_ready(self.ports, timeout=30):
            self.board.stop()
            raise RuntimeError('firmware did not start:\n' + self.board.console()[-2000:])

    def _req(self, path, data=None):
        req = urllib.request.Request('http://127.0.0.1:%d%s' % (self.ports[2], path), data=data)
        req.add_header('Authorization',
                       'Basic ' + base64.b64encode(('admin:' + PASSWORD).encode()).decode())
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def action(self, name):
        return self._req('/action/' + name, urllib.parse.urlencode({}).encode())

    def alarm(self):
        return self._req('/status')['alarm']

    def captures(self):
        return (self.board.read('camera_stats', {}) or {}).get('captures', 0)

    def frames_after(self, n, timeout=20):
        start = self.alarm()['frames_checked']
        end = time.monotonic() + timeout
        while self.alarm()['frames_checked'] < start + n:
            if time.monotonic() > end:
                raise RuntimeError('the detector does not run')
            time.sleep(0.1)

    def stop(self):
        self.board.stop()


def _watch(port, seconds, counts, i, stop=None):
    try:
        r = MjpegReader(port, timeout=10)
        r.frame()
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end and not (stop and stop.is_set()):
            r.frame()
            n += 1
        counts[i] = n
        r.close()
    except (OSError, EOFError):
        counts[i] = counts[i] or 0


def stream(dev, n, seconds):
    """fps per viewer, captures per streamed frame (per viewer), CPU ms per streamed frame."""
    counts = [0] * n
    c0, t0 = dev.captures(), cpu_seconds(dev.board.pid)
    ts = [threading.Thread(target=_watch, args=(dev.ports[1], seconds, counts, i))
          for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(seconds + 30)
    cpu = cpu_seconds(dev.board.pid) - t0
    time.sleep(0.2)
    caps = dev.captures() - c0
    return ([c / seconds for c in counts], caps / max(max(counts), 1),
            1000 * cpu / max(sum(counts), 1))


def stream_rows(tmp):
    rows = []
    for label, camera, n in (('VGA 25 fps, 4 viewers', None, 4),
                             ('VGA unpaced, 1 viewer', {'fps': 1000}, 1)):
        dev = Device(os.path.join(tmp, 'stream%d' % len(rows)),
                     {'camera': {'max_fps': 1000 if camera else 25}}, camera)
        try:
            stream(dev, 1, 1)                                   # warm up
            for armed in (False, True):
                dev.action('arm' if armed else 'disarm')
                if armed:
                    dev.frames_after(3)
                    f0 = dev.alarm()['frames_checked']
                fps, cpf, cpu = stream(dev, n, SECONDS)
                checked = (dev.alarm()['frames_checked'] - f0) / SECONDS if armed else 0
                rows.append([label, 'armed' if armed else 'disarmed',
                             ' '.join('%.1f' % f for f in fps), '%.2f' % cpf, '%.2f' % cpu,
                             '%.1f' % checked])
        finally:
            dev.stop()
    return rows, dev.mpy


def latency(tmp, peers, viewers):
    srv = peers.lfcp()
    tg = peers.telegram()
    cfg = peers.config(servers=[srv], telegram=tg, alarm={'event_gap_s': 1})
    dev = Device(os.path.join(tmp, 'latency%d' % viewers), cfg)
    stop = threading.Event()
    ts = [threading.Thread(target=_watch, args=(dev.ports[1], 3600, [0] * viewers, i, stop))
          for i in range(viewers)]
    for t in ts:
        t.start()
    moal, photo, frames = [], [], []
    try:
        for _ in range(RUNS):
            dev.board.control('camera', motion=False)
            dev.action('disarm')
            time.sleep(1.2)                                     # past the event gap
            dev.action('arm')
            dev.frames_after(8)                                 # learned the still room
            m0, p0 = len(peers.moal(srv, NAME)), len(tg.photos)
            f0 = dev.alarm()['frames_checked']
            t0 = time.monotonic()
            dev.board.control('camera', motion=True)
            t_m = t_p = None
            end = t0 + 20
            while (t_m is None or t_p is None) and time.monotonic() < end:
                now = time.monotonic()
                if t_m is None and len(peers.moal(srv, NAME)) > m0:
                    t_m = now - t0
                    frames.append(dev.alarm()['frames_checked'] - f0)
                if t_p is None and len(tg.photos) > p0:
                    t_p = now - t0
                time.sleep(0.01)
            moal.append(t_m)
            photo.append(t_p)
    finally:
        stop.set()
        dev.stop()
        for t in ts:
            t.join(15)
    return moal, photo, frames


def _ms(values):
    ok = [v for v in values if v is not None]
    if not ok:
        return 'none arrived', '', ''
    lost = len(values) - len(ok)
    return ('%.0f' % (1000 * statistics.median(ok)), '%.0f-%.0f' % (1000 * min(ok), 1000 * max(ok)),
            ('%d lost' % lost) if lost else '')


def main():
    tmp = tempfile.mkdtemp(prefix='bench-alarm-')
    rows, mpy = stream_rows(tmp)
    table('Stream with and without motion detection at 5 fps (%s; %.0f s per row)'
          % ('precompiled .mpy' if mpy else 'sources, no build/x64', SECONDS),
          ['camera', 'alarm', 'fps per viewer', 'captures/frame', 'VM CPU ms/sent frame',
           'frames checked/s'], rows)
    lat = []
    for viewers in (0, 4):
        peers = Peers(os.path.join(tmp, 'peers%d' % viewers))
        try:
            moal, photo, frames = latency(tmp, peers, viewers)
        finally:
            peers.close()
        for what, values in (('MOAL at the LFCP server', moal), ('photo at the fake Telegram', photo)):
            lat.append(['%d' % viewers, what] + list(_ms(values)))
        if frames:
            lat.append(['%d' % viewers, 'frames checked until the MOAL', '%.0f' % statistics.median(frames),
                        '%d-%d' % (min(frames), max(frames)), ''])
    table('Scene starts moving -> alarm delivered (VGA, detection 5 fps, min_frames 2; %d runs)'
          % RUNS, ['viewers', 'delivered', 'median ms', 'range', ''], lat)


if __name__ == '__main__':
    main()
