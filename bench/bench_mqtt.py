"""MQTT on the device: the stream's frame rate while alarm photos go to a real Mosquitto.

The firmware on the MicroPython VM (simulated camera, VGA) with one MJPEG viewer; the stream is
measured alone, then while the camera entity's photo (a VGA JPEG, ~30 KB) is published again and
again (the photo button, as fast as the device answers). Goal: ratio >= 0.9. Never asserts.
BENCH_SECONDS sets the length of each measurement (default 5).
"""
import json
import os
import tempfile
import threading
import time

from sim.simulate import Board
from testkit.broker import USERS, Broker
from testkit.helpers import MjpegReader, free_port

SECONDS = float(os.environ.get('BENCH_SECONDS', '5'))
BASE = 'esp32cam/benchcam'


def rate(port, seconds):
    r = MjpegReader(port, '/stream', timeout=10)
    try:
        r.frame()
        end = time.monotonic() + seconds
        n = 0
        t0 = time.monotonic()
        while time.monotonic() < end:
            r.frame()
            n += 1
        return n / (time.monotonic() - t0)
    finally:
        r.close()


def status(port):
    import base64
    import urllib.request
    req = urllib.request.Request('http://127.0.0.1:%d/status' % port)
    req.add_header('Authorization', 'Basic ' + base64.b64encode(b'admin:bench-password').decode())
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def heap_used(port):
    return status(port)['heap_used']


def boot(tmp, name, broker=None):
    flash = os.path.join(tmp, name)
    os.makedirs(os.path.join(flash, '.sim'))
    ports = [free_port() for _ in range(3)]
    cfg = {'device': {'name': 'benchcam'},
           'http': {'bind': '127.0.0.1', 'control_port': ports[0], 'stream_port': ports[1],
                    'admin_port': ports[2]},
           'admin': {'password': 'bench-password'}, 'camera': {'framesize': 'VGA'},
           'wifi': {'upstream': [{'ssid': 'home', 'password': 'home-pass-1'}]},
           'internet': {'probe': []}}
    if broker:
        cfg['mqtt'] = {'host': '127.0.0.1', 'port': broker.port, 'user': 'cam',
                       'password': USERS['cam']}
    with open(os.path.join(flash, 'config.json'), 'w') as f:
        json.dump(cfg, f)
    b = Board(flash)
    b.start()
    if not b.wait_ready(ports, timeout=30):
        b.stop()
        raise RuntimeError('firmware did not start:\n' + b.console()[-2000:])
    return b, ports


def heap_cost(tmp, broker):
    """Heap in use after GC (the admin /status), idle, without and with MQTT connected."""
    out = []
    for name, br in (('heap-off', None), ('heap-on', broker)):
        b, ports = boot(tmp, name, br)
        try:
            deadline = time.monotonic() + 30     # settle: Wi-Fi, the session, discovery sent
            while time.monotonic() < deadline:
                m = status(ports[2])['mqtt']
                if not br or (m.get('announced') and not m.get('queued')):
                    break
                time.sleep(0.2)
            time.sleep(2)
            out.append(min(heap_used(ports[2]) for _ in range(3)))
        finally:
            b.stop()
    return out


def main():
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(os.path.join(tmp, 'broker')).start()
        off, on = heap_cost(tmp, broker)
        print('| heap in use after GC, idle | bytes |\n|---|---|')
        print('| without MQTT | %d |' % off)
        print('| with MQTT connected, entities announced | %d (+%d) |' % (on, on - off))
        print()
        flash = os.path.join(tmp, 'flash')
        os.makedirs(os.path.join(flash, '.sim'))
        ports = [free_port() for _ in range(3)]
        cfg = {'device': {'name': 'benchcam'},
               'http': {'bind': '127.0.0.1', 'control_port': ports[0], 'stream_port': ports[1],
                        'admin_port': ports[2]},
               'admin': {'password': 'bench-password'}, 'camera': {'framesize': 'VGA'},
               'wifi': {'upstream': [{'ssid': 'home', 'password': 'home-pass-1'}]},
               'internet': {'probe': []},
               'mqtt': {'host': '127.0.0.1', 'port': broker.port, 'user': 'cam',
                        'password': USERS['cam']}}
        with open(os.path.join(flash, 'config.json'), 'w') as f:
            json.dump(cfg, f)
        b = Board(flash)
        b.start()
        w = None
        try:
            if not b.wait_ready(ports, timeout=30):
                raise RuntimeError('firmware did not start:\n' + b.console()[-2000:])
            w = broker.watch()
            w.wait(BASE + '/availability', lambda p: p == b'online', timeout=30)
            rate(ports[1], 1)                                   # warm up
            alone = rate(ports[1], SECONDS)
            stop = threading.Event()
            sizes = []

            def press():
                while not stop.is_set():
                    m = w.mark()
                    w.publish(BASE + '/photo/take', 'PRESS')
                    try:
                        sizes.append(len(w.wait(BASE + '/photo', since=m, timeout=10)))
                    except AssertionError:
                        pass

            t = threading.Thread(target=press)
            t.start()
            try:
                busy = rate(ports[1], SECONDS)
            finally:
                stop.set()
                t.join(15)
            kb = sum(sizes) / len(sizes) / 1024 if sizes else 0
            print('| measurement | value |\n|---|---|')
            print('| stream alone, fps | %.1f |' % alone)
            print('| stream while publishing photos, fps | %.1f |' % busy)
            print('| ratio (goal >= 0.9) | %.2f |' % (busy / alone if alone else 0))
            print('| photos published in %.0f s | %d (%.1f KB each, %.1f/s) |' % (
                SECONDS, len(sizes), kb, len(sizes) / SECONDS))
        finally:
            if w:
                w.close()
            b.stop()
            broker.stop()


if __name__ == '__main__':
    main()
