"""Clips benchmark: a motion clip at VGA 10 fps on the simulated card while 2 viewers watch.

Runs the firmware (source) on the MicroPython VM with a 4 MB heap (an ESP32-CAM's PSRAM), the
simulated camera at VGA, max_fps 10, the card an image file, the fake Bot API for delivery.
Prints: frames dropped from the clip versus frames captured, the stream rate before and during
the write, the worst gap a viewer saw and the longest single card write, the heap the pre-trigger
ring takes per second of pre-roll, the write throughput to the simulated card, and the times from
the trigger to the clip saved and to the clip stored at the fake Bot API. Never asserts.
BENCH_SECONDS: length of the baseline measurement (default 5).
"""
import base64
import json
import os
import subprocess
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

from peers import fake_telegram as ft  # noqa: E402
from sim.simulate import Board  # noqa: E402
from testkit.helpers import Viewers, free_port  # noqa: E402

SECONDS = float(os.environ.get('BENCH_SECONDS', '5'))
MP = os.path.join(ROOT, '.venv', 'bin', 'micropython')
TOOL = os.path.join(ROOT, 'tools', 'testkit', 'vm', 'sdcard_image.py')
TOKEN = '123456:' + 'A' * 35
CHAT = 42
FPS = 10
MOTION_S = 3


def status(port):
    req = urllib.request.Request('http://127.0.0.1:%d/status' % port)
    req.add_header('Authorization', 'Basic ' + base64.b64encode(b'admin:bench-password').decode())
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def post(port, action):
    req = urllib.request.Request('http://127.0.0.1:%d/action/%s' % (port, action), data=b'')
    req.add_header('Authorization', 'Basic ' + base64.b64encode(b'admin:bench-password').decode())
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()


def until(pred, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise RuntimeError('timed out waiting for ' + what)


def card_throughput(tmp):
    """Writes 60 VGA frames as one AVI to a FAT image on the VM, in 4 KB slices: MB/s and the
    longest single write (the figure that bounds a loop stall)."""
    img = os.path.join(tmp, 'tp.img')
    subprocess.run([MP, TOOL, 'mkfs', img, '16'], check=True, timeout=60)
    frame = os.path.join(ROOT, 'sim', 'frames', '640x480', 'motion', '0000.jpg')
    code = '''
import os, time, sys
from firmware.storage import avi
from testkit.vm.sdcard_image import FileDev
os.mount(os.VfsFat(FileDev(%r)), '/sd')
j = open(%r, 'rb').read()
f = open('/sd/t.avi', 'wb')
w = avi.Writer(f, 640, 480, 10, bytearray(1600))
worst = 0
t0 = time.ticks_us()
mv = memoryview(j)
for i in range(60):
    f.write(w.chunk_header(len(j)))
    for off in range(0, len(j), 4096):
        t = time.ticks_us()
        f.write(mv[off:off + 4096])
        worst = max(worst, time.ticks_diff(time.ticks_us(), t))
    if len(j) & 1:
        f.write(b'\\0')
    if i %% 10 == 9:
        f.flush()
w.close()
f.close()
us = time.ticks_diff(time.ticks_us(), t0)
print(60 * len(j), us, worst)
''' % (img, frame)
    r = subprocess.run([MP, '-c', code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                       env=dict(os.environ, MICROPYPATH=':'.join((ROOT, os.path.join(ROOT, 'lib'),
                                                                 os.path.join(ROOT, 'tools')))))
    if r.returncode:
        raise RuntimeError('card benchmark failed: ' + r.stdout[-500:] + r.stderr[-500:])
    n, us, worst = (int(x) for x in r.stdout.split()[-3:])
    return n / us, worst / 1000.0


def main():
    print('Clips benchmark: VGA, camera max_fps 10, clips at %d fps (pre_s 3, post_s 3), 2 viewers, '
          '4 MB heap, motion for %d s, the clip sent to the fake Bot API' % (FPS, MOTION_S))
    with tempfile.TemporaryDirectory() as tmp:
        pki = ft.make_ca(os.path.join(tmp, 'pki'))
        fake = ft.FakeTelegram(TOKEN, pki['cert'], pki['key']).start()
        flash = os.path.join(tmp, 'flash')
        os.makedirs(os.path.join(flash, '.sim'))
        subprocess.run([MP, TOOL, 'mkfs', os.path.join(flash, '.sim', 'sdcard.img'), '64'], check=True,
                       timeout=60)
        ports = [free_port() for _ in range(3)]
        cfg = {'http': {'bind': '127.0.0.1', 'control_port': ports[0], 'stream_port': ports[1],
                        'admin_port': ports[2]},
               'admin': {'password': 'bench-password'},
               'camera': {'framesize': 'VGA', 'max_fps': 10}, 'internet': {'probe': []},
               'alarm': {'event_gap_s': 0},
               'storage': {'sdcard': True},
               'clips': {'fps': FPS, 'pre_s': 3, 'pre_bytes': 1200000, 'post_s': 3, 'max_s': 60},
               'telegram': {'token': TOKEN, 'chat_ids': [CHAT], 'api_url': fake.url,
                            'ca_file': pki['ca_der'], 'poll_s': 0}}
        with open(os.path.join(flash, 'config.json'), 'w') as f:
            json.dump(cfg, f)
        b = Board(flash, heapsize='4M', once=True)
        b.start()
        adm = ports[2]
        try:
            if not b.wait_ready(ports, timeout=30):
                raise RuntimeError('firmware did not start:\n' + b.console()[-2000:])
            v = Viewers(ports[1], 2)
            b.control('camera', motion=False)
            post(adm, 'arm')
            until(lambda: status(adm)['clips']['ring_frames'] >= 3 * FPS, 30, 'a full ring')
            t0 = time.monotonic()
            time.sleep(SECONDS)
            base_fps, base_gap = v.rate(t0, time.monotonic())
            ring = status(adm)['clips']
            b.control('camera', motion=True)
            until(lambda: status(adm)['clips']['recording'], 30, 'the alarm clip')
            t_trig = time.monotonic()
            time.sleep(MOTION_S)
            b.control('camera', motion=False)
            last = until(lambda: status(adm)['clips']['last'], 60, 'the clip saved')
            t_saved = time.monotonic()
            fake.wait(lambda: fake.documents, 60)
            t_sent = fake.documents[0]['t'] if fake.documents else None
            rec_fps, rec_gap = v.rate(t_trig, t_saved)
            # a clip written with nothing else going on (no detection, no upload): record_start
            post(adm, 'disarm')
            time.sleep(1)
            t_m0 = time.monotonic()
            time.sleep(SECONDS)
            idle_fps, idle_gap = v.rate(t_m0, time.monotonic())
            post(adm, 'record_start')
            t_m1 = time.monotonic()
            time.sleep(SECONDS)
            man_fps, man_gap = v.rate(t_m1, time.monotonic())
            post(adm, 'record_stop')
            v.close()
            st = status(adm)
        finally:
            b.stop()
            fake.stop()
        c = st['clips']
        mbps, worst_slice = card_throughput(tmp)
    rows = [
        ('clip frames (from before the trigger)', '%d (%d)' % (last['frames'], last['pre'])),
        ('frames dropped from the clip (card too slow) / empty slots', '%d / %d' % (c['dropped'], c['gaps'])),
        ('stream fps, slowest of 2 viewers: armed / alarm clip (photo upload too)', '%.1f / %.1f (%.2f)' % (
            base_fps, rec_fps, rec_fps / base_fps if base_fps else 0)),
        ('longest gap between frames at a viewer: armed / alarm clip', '%.0f / %.0f ms' % (
            1000 * base_gap, 1000 * rec_gap)),
        ('stream fps, slowest of 2 viewers: disarmed / writing a clip', '%.1f / %.1f (%.2f)' % (
            idle_fps, man_fps, man_fps / idle_fps if idle_fps else 0)),
        ('longest gap between frames at a viewer: disarmed / writing', '%.0f / %.0f ms' % (
            1000 * idle_gap, 1000 * man_gap)),
        ('longest single card write in the firmware (slice 4096 B)', '%d ms' % c['worst_write_ms']),
        ('pre-trigger ring: heap per second of pre-roll', '%.0f KB (%d frames, %d bytes)' % (
            ring['ring_bytes'] / (ring['ring_frames'] / FPS) / 1024, ring['ring_frames'], ring['ring_bytes'])),
        ('write throughput to the simulated card (VM, FAT, 4 KB slices)', '%.1f MB/s, longest slice %.1f ms'
         % (mbps, worst_slice)),
        ('trigger to clip saved (motion %d s + post_s 3 s)' % MOTION_S, '%.1f s' % (t_saved - t_trig)),
        ('trigger to clip stored at the fake Bot API', '%.1f s' % (t_sent - t_trig) if t_sent else 'not delivered'),
        ('clip saved to stored at the fake Bot API', '%.1f s' % (t_sent - t_saved) if t_sent else '-'),
    ]
    w = max(len(r[0]) for r in rows)
    print('\n' + 'measure'.ljust(w) + ' | value')
    print('-' * w + '-|-' + '-' * 30)
    for k, val in rows:
        print(k.ljust(w) + ' | ' + val)


if __name__ == '__main__':
    main()
