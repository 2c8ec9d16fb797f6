"""Field operations: the heap the firmware holds after boot, and an update over the air on the
simulator (bundle size, time until the board answers, time until the new version is confirmed).

    python bench/bench_ops.py        (needs `make build`)
"""
import base64
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, os.path.join(ROOT, 'tools')]
from sim.simulate import SIM, Board  # noqa: E402
from testkit.helpers import free_port  # noqa: E402

KEY = 'bench-update-key-0123456789'
AUTH = 'Basic ' + base64.b64encode(b'admin:bench-admin-pw').decode()


def _bundle():
    spec = importlib.util.spec_from_file_location('bundle', os.path.join(ROOT, 'tools', 'build', 'bundle.py'))
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


def request(port, path, data=None, timeout=60):
    req = urllib.request.Request('http://127.0.0.1:%d%s' % (port, path), data=data,
                                 headers={'Authorization': AUTH})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.load(r)


def device(flash, heapsize=None, on_flash=False):
    os.makedirs(os.path.join(flash, '.sim'), exist_ok=True)
    ports = [free_port() for _ in range(3)]
    cfg = {'device': {'name': 'bench'},
           'http': {'bind': '127.0.0.1', 'control_port': ports[0], 'stream_port': ports[1],
                    'admin_port': ports[2]},
           'admin': {'user': 'admin', 'password': 'bench-admin-pw'},
           'wifi': {'ap_password': 'bench-ap-pass', 'upstream': [{'ssid': 'home', 'password': 'home-pass-1'}]},
           'internet': {'probe': []}, 'upnp': {'ssdp': '127.0.0.1:%d' % free_port()},
           'update': {'key': KEY, 'confirm_s': 20}}
    with open(os.path.join(flash, 'config.json'), 'w') as f:
        json.dump(cfg, f)
    env = None
    if on_flash:
        for name in ('firmware', 'lib'):
            shutil.copytree(os.path.join(ROOT, 'build', 'x64', name), os.path.join(flash, name))
        for name in ('boot.py', 'main.py'):
            shutil.copyfile(os.path.join(ROOT, name), os.path.join(flash, name))
        env = {'MICROPYPATH': SIM + ':.:.frozen:lib'}
    b = Board(flash, heapsize=heapsize, mpy=not on_flash, env=env)
    b.start()
    if not b.wait_ready(ports, 60):
        b.stop()
        raise RuntimeError('the firmware did not come up:\n' + b.console()[-2000:])
    return b, ports[2]


def boot_heap(tmp):
    b, port = device(os.path.join(tmp, 'heap'), heapsize='256K')
    try:
        time.sleep(5)
        s = request(port, '/status')
        return s['heap_used'], s['heap_free']
    finally:
        b.stop()


def update(tmp):
    bundle = _bundle()
    data = bundle.make(os.path.join(ROOT, 'build', 'x64'), KEY, 'x64', '0.0.0-bench')
    b, port = device(os.path.join(tmp, 'ota'), on_flash=True)
    try:
        t0 = time.time()
        request(port, '/update', data)
        answered = time.time() - t0
        while time.time() - t0 < 120:
            try:
                s = request(port, '/status', timeout=3)
                if s['version'] == '0.0.0-bench' and not s['update']['trial']:
                    return len(data), answered, time.time() - t0
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError('the update was not confirmed')
    finally:
        b.stop()


def main():
    with tempfile.TemporaryDirectory() as tmp:
        used, free = boot_heap(tmp)
        size, answered, confirmed = update(tmp)
    print('\n## Field operations (bench/bench_ops.py)\n')
    print('| what | figure |')
    print('|---|---|')
    print('| heap after boot, 256K VM, precompiled | %.1f KB used, %.1f KB free |' % (used / 1024, free / 1024))
    print('| update bundle of the x64 build | %d KB |' % (size // 1024))
    print('| board answers the upload (install done) | %.1f s |' % answered)
    print('| new version confirmed healthy, from the upload | %.1f s |' % confirmed)


if __name__ == '__main__':
    main()
