#!/usr/bin/env python3
"""`make soak`: the whole firmware for minutes under an ESP32-sized heap, watched for leaks.

The precompiled firmware (build/x64, as deployed) runs on the VM with `-X heapsize` (default
512K) and is kept busy the way a real site keeps it: two viewers stream and reconnect now and
then, the alarm is armed and the scene moves (an alarm every alarm.event_gap_s), LFCP heartbeats
go to a reference server, alarm photos and chat-requested /photo replies are uploaded to the
fake Bot API over TLS, the Internet probe runs. Every SOAK_SAMPLE_S seconds it samples heap used
after GC (admin status, the lowest of three reads, so a frame in flight does not count), the VM
process's open descriptors (/proc/<pid>/fd), and the traffic counters; it prints them as a table
and fails (exit 1) when heap or descriptors trend upward over the second half (least-squares
slope above a threshold), when the VM restarted or died, or when nothing flowed.

    SOAK_SECONDS=300 SOAK_HEAP=512K python bench/soak.py     # after `make build`

Environment: SOAK_SECONDS (300), SOAK_HEAP (512K), SOAK_FRAMESIZE (QVGA), SOAK_SAMPLE_S (10),
SOAK_HEAP_SLOPE (bytes/min, 1024) and SOAK_FD_SLOPE (descriptors/min, 0.5): a trend fails the
soak when its slope is above these and its rise over the second half is above the noise of one
reading (2 KB, 1.5 descriptors), so a short run does not fail on noise. SOAK_CONFIG: JSON merged
into config.json (e.g. '{"alarm": {"events_kept": 200}}', the negative control: a buffer that
keeps filling must fail the soak).
main() returns the summary figures; the table also goes to build/soak.txt for `make bench`.

QVGA by default: at VGA the x64 VM needs about 1024K (two viewers, two TLS connections whose
mbedTLS buffers come from the GC heap here but from the IDF heap on the board, and ~49 KB of
simulator stand-ins that are C modules on the board); under 512K it finds no block for the
next frame (docs/telegram.md). SOAK_FRAMESIZE=VGA SOAK_HEAP=1024K soaks the board's usual size.
"""
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

from peers import fake_telegram  # noqa: E402
from sim.simulate import Board  # noqa: E402
from testkit.helpers import MjpegReader, free_port, merge  # noqa: E402
from testkit.vm.lfcp_harness import KEY, Servers  # noqa: E402

ADMIN = ('admin', 'soak-admin-pw')
TOKEN = '123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw'
CHAT = 42
NAME = 'soakcam'
HEAP_NOISE = 2048   # bytes: heap used after GC moves this much between two quiet readings
FD_NOISE = 1.5      # a probe or an upload holds a descriptor for a moment


def env_num(name, default, kind=float):
    try:
        return kind(os.environ.get(name, default))
    except ValueError:
        sys.exit('%s must be a number' % name)


def slope(points):
    """Least-squares slope of (t, y) points, per unit of t; 0 with fewer than 3 points."""
    n = len(points)
    if n < 3:
        return 0.0
    mt = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    den = sum((p[0] - mt) ** 2 for p in points)
    return sum((p[0] - mt) * (p[1] - my) for p in points) / den if den else 0.0


class Viewer(threading.Thread):
    """One MJPEG viewer: reads frames, hangs up and reconnects every `every` seconds; a stream
    that breaks by itself counts as an error (and is reconnected too)."""

    def __init__(self, port, every, stop):
        super().__init__(daemon=True)
        self.port, self.every, self.stop = port, every, stop
        self.frames = self.reconnects = self.errors = 0
        self.last_error = None

    def run(self):
        first = True
        while not self.stop.is_set():
            r = None
            try:
                r = MjpegReader(self.port, timeout=10)
                if r.status != 200:
                    raise OSError('HTTP %d' % r.status)
                if not first:
                    self.reconnects += 1
                first = False
                end = time.monotonic() + self.every
                while time.monotonic() < end and not self.stop.is_set():
                    _, jpeg = r.frame()
                    if jpeg[:2] != b'\xff\xd8':
                        raise ValueError('not a JPEG')
                    self.frames += 1
            except (OSError, EOFError, ValueError, KeyError) as e:
                self.errors += 1
                self.last_error = repr(e)
                self.stop.wait(1)
            finally:
                if r:
                    r.close()


class Soak:
    def __init__(self, seconds, heap, framesize, sample_s):
        self.seconds, self.heap, self.sample_s = seconds, heap, sample_s
        self.flash = tempfile.mkdtemp(prefix='soak-')
        self.stop = threading.Event()
        self.rows = []
        self.servers = Servers()
        self.srv = self.servers.start()
        pki = fake_telegram.make_ca(os.path.join(self.flash, 'pki'))
        self.tg = fake_telegram.FakeTelegram([TOKEN], pki['cert'], pki['key']).start()
        ports = {'control_port': free_port(), 'stream_port': free_port(), 'admin_port': free_port()}
        self.ports = ports
        self.cfg = {
            'device': {'name': NAME},
            'http': dict(ports, bind='127.0.0.1'),
            'admin': {'user': ADMIN[0], 'password': ADMIN[1]},
            'camera': {'framesize': framesize},
            'wifi': {'ap_password': 'soak-ap-pass', 'upstream': [{'ssid': 'home', 'password': 'home-pass-1'}]},
            # bounded buffers small, so they are full before the second half the trend is read on
            'alarm': {'event_gap_s': 10, 'auto_arm': False, 'events_kept': 3},
            'log': {'lines': 10},
            'lfcp': {'key': KEY, 'port': free_port(), 'heartbeat_s': 2,
                     'servers': ['127.0.0.1:%d' % self.srv.port]},
            'telegram': {'token': TOKEN, 'chat_ids': [CHAT], 'api_url': self.tg.url,
                         'ca_file': pki['ca_der'], 'poll_s': 5},
            'internet': {'probe': ['127.0.0.1:%d' % ports['control_port']], 'interval_s': 20},
            'upnp': {'ssdp': '127.0.0.1:%d' % free_port()},   # no router: discovery stays local
        }
        merge(self.cfg, json.loads(os.environ.get('SOAK_CONFIG') or '{}'))
        os.makedirs(os.path.join(self.flash, '.sim'))
        with open(os.path.join(self.flash, 'config.json'), 'w') as f:
            json.dump(self.cfg, f)
        self.board = Board(self.flash, heapsize=heap, mpy=True)

    # --- the device -----------------------------------------------------------------------
    def _req(self, path, data=None):
        req = urllib.request.Request('http://127.0.0.1:%d%s' % (self.ports['admin_port'], path),
                                     data=data)
        req.add_header('Authorization', 'Basic ' + base64.b64encode(
            ('%s:%s' % ADMIN).encode()).decode())
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.read()

    def status(self):
        return json.loads(self._req('/status'))

    def action(self, name, **form):
        return self._req('/action/' + name, urllib.parse.urlencode(form).encode())

    def fds(self):
        try:
            return len(os.listdir('/proc/%d/fd' % self.board.pid))
        except (OSError, TypeError):
            return None

    def heartbeats(self):
        return self.servers.call(lambda: self.srv.devices[NAME].heartbeats
                                 if NAME in self.srv.devices else 0)

    # --- the run --------------------------------------------------------------------------
    def run(self):
        self.board.start()
        if not self.board.wait_ready(timeout=60):
            raise RuntimeError('the firmware did not come up:\n' + self.board.console()[-3000:])
        self.pid = self.board.pid
        self.board.control('camera', motion=True)
        self.action('arm')
        self.viewers = [Viewer(self.ports['stream_port'], every, self.stop) for every in (45, 70)]
        for v in self.viewers:
            v.start()
        self.photo_requests = 0
        t0 = time.monotonic()
        next_photo = t0 + 15
        next_sample = t0 + 5
        while time.monotonic() - t0 < self.seconds:
            now = time.monotonic()
            if now >= next_photo:
                self.tg.add_update(CHAT, '/photo')   # a chat asks; the device's poller answers
                self.photo_requests += 1
                next_photo += 30
            if now >= next_sample:
                if not self.sample(now - t0):
                    break
                next_sample += self.sample_s
            time.sleep(0.2)
        self.sample(time.monotonic() - t0)

    def sample(self, t):
        """One row of the table; False when the VM is gone."""
        if not self.board.running or self.board.boots != 1 or self.board.pid != self.pid:
            return False
        heaps, st = [], None
        for _ in range(3):
            try:
                st = self.status()
            except OSError:
                continue
            heaps.append(st['heap_used'])
            time.sleep(0.2)
        if st is None:
            return False
        with self.tg.lock:
            photos = list(self.tg.photos)
        self.rows.append({
            't': round(t), 'heap_used': min(heaps), 'heap_free': st['heap_free'], 'fds': self.fds(),
            'frames': sum(v.frames for v in self.viewers),
            'reconnects': sum(v.reconnects for v in self.viewers),
            'viewer_errors': sum(v.errors for v in self.viewers),
            'alarms': st['alarm']['alarms'], 'heartbeats': self.heartbeats(),
            'uploads': len(photos), 'bad_uploads': len([p for p in photos if not p.get('valid', True)]),
            'tg_failed': st['telegram']['failed'] + st['telegram']['dropped'],
            'restarts': sum(x['restarts'] for x in st['tasks'].values()),
        })
        print(self.line(self.rows[-1]), flush=True)
        return True

    HEAD = ('t s', 'heap used KB', 'free KB', 'fds', 'frames', 'reconn', 'v.err', 'alarms',
            'beats', 'uploads', 'tg fail', 'task rst')

    @classmethod
    def header(cls):
        return ' '.join('%8s' % h for h in cls.HEAD)

    @staticmethod
    def line(r):
        return ' '.join('%8s' % x for x in (
            r['t'], '%.1f' % (r['heap_used'] / 1024), '%.0f' % (r['heap_free'] / 1024), r['fds'],
            r['frames'], r['reconnects'], r['viewer_errors'], r['alarms'], r['heartbeats'],
            r['uploads'], r['tg_failed'], r['restarts']))

    def close(self):
        self.stop.set()
        for v in getattr(self, 'viewers', ()):
            v.join(15)
        self.board.stop()
        self.tg.stop()
        self.servers.close()

    # --- the verdict ----------------------------------------------------------------------
    def verdict(self, heap_slope_max, fd_slope_max):
        rows = self.rows
        fail = []
        if self.board.boots != 1 or self.board.exit_codes:
            fail.append('the VM restarted or died: exit codes %s' % self.board.exit_codes)
        if len(rows) < 4:
            fail.append('only %d samples' % len(rows))
            return {'ok': False, 'failures': fail, 'samples': len(rows)}
        half = [r for r in rows if r['t'] >= rows[-1]['t'] / 2]
        hs = slope([(r['t'] / 60, r['heap_used']) for r in half])
        fs = slope([(r['t'] / 60, r['fds']) for r in half if r['fds'] is not None])
        span = (half[-1]['t'] - half[0]['t']) / 60
        if hs > heap_slope_max and hs * span > HEAP_NOISE:
            fail.append('heap used grows %.0f B/min over the second half (allowed %.0f)' % (
                hs, heap_slope_max))
        if fs > fd_slope_max and fs * span > FD_NOISE:
            fail.append('descriptors grow %.2f/min over the second half (allowed %.2f)' % (
                fs, fd_slope_max))
        last, first = rows[-1], rows[0]
        minutes = max(last['t'] / 60, 1e-9)
        for key, what in (('frames', 'frames to the viewers'), ('alarms', 'alarms'),
                          ('heartbeats', 'heartbeats'), ('uploads', 'Telegram uploads')):
            if last[key] <= first[key]:
                fail.append('no %s during the soak' % what)
        if last['restarts']:
            fail.append('%d task restarts' % last['restarts'])
        if last['bad_uploads']:
            fail.append('%d uploads were not valid JPEGs' % last['bad_uploads'])
        return {
            'ok': not fail, 'failures': fail, 'seconds': last['t'], 'samples': len(rows),
            'heap': self.heap, 'framesize': self.cfg['camera']['framesize'],
            'heap_used_kb_first': round(first['heap_used'] / 1024, 1),
            'heap_used_kb_last': round(last['heap_used'] / 1024, 1),
            'heap_used_kb_max': round(max(r['heap_used'] for r in rows) / 1024, 1),
            'heap_free_kb_min': round(min(r['heap_free'] for r in rows) / 1024, 1),
            'heap_slope_b_per_min': round(hs), 'fds_first': first['fds'], 'fds_last': last['fds'],
            'fds_max': max(r['fds'] or 0 for r in rows), 'fd_slope_per_min': round(fs, 3),
            'frames': last['frames'], 'fps_per_viewer': round(last['frames'] / 2 / (minutes * 60), 1),
            'reconnects': last['reconnects'], 'viewer_errors': last['viewer_errors'],
            'alarms': last['alarms'], 'heartbeats': last['heartbeats'],
            'uploads': last['uploads'], 'photo_requests': self.photo_requests,
            'telegram_failed': last['tg_failed'], 'task_restarts': last['restarts'],
        }


def build():
    """Compile the firmware for the VM (incremental: only what changed)."""
    py = sys.executable
    r = subprocess.run([py, os.path.join(ROOT, 'tools', 'build', 'build.py'), '--march', 'x64',
                        os.path.join(ROOT, 'build', 'x64')], cwd=ROOT)
    if r.returncode:
        sys.exit('build failed')


def main():
    seconds = env_num('SOAK_SECONDS', 300)
    heap = os.environ.get('SOAK_HEAP', '512K')
    sample_s = env_num('SOAK_SAMPLE_S', 10)
    build()
    soak = Soak(seconds, heap, os.environ.get('SOAK_FRAMESIZE', 'QVGA'), sample_s)
    out = ['soak: %d s, heap %s, %s, two viewers, alarm armed on a moving scene, LFCP, Telegram'
           % (seconds, heap, soak.cfg['camera']['framesize'])]
    print(out[0])
    print(Soak.header(), flush=True)
    try:
        soak.run()
        summary = soak.verdict(env_num('SOAK_HEAP_SLOPE', 1024), env_num('SOAK_FD_SLOPE', 0.5))
    except Exception as e:
        summary = {'ok': False, 'failures': ['soak aborted: %r' % e]}
    finally:
        console = soak.board.console()
        soak.close()
    if not summary['ok']:
        print(console[-4000:])
    out.append(Soak.header())
    out += [Soak.line(r) for r in soak.rows]
    out.append('summary: ' + json.dumps(summary, sort_keys=True))
    out.append('verdict: ' + ('PASS' if summary['ok'] else 'FAIL: ' + '; '.join(summary['failures'])))
    print('\n'.join(out[-2:]))
    os.makedirs(os.path.join(ROOT, 'build'), exist_ok=True)
    with open(os.path.join(ROOT, 'build', 'soak.txt'), 'w') as f:
        f.write('\n'.join(out) + '\n')
    if summary['ok']:
        shutil.rmtree(soak.flash, ignore_errors=True)
    else:
        print('flash dir kept for a look: ' + soak.flash)
    return summary


if __name__ == '__main__':
    sys.exit(0 if main()['ok'] else 1)
