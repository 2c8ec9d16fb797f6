"""The `firmware` fixture: the real firmware on the MicroPython VM with simulated hardware.

    dev = firmware({'camera': {'framesize': 'QVGA'}})
    dev.url('control', '/status'); dev.board.control('camera', fail_capture=3)

Each device gets a temporary flash directory, free loopback ports and a test admin password, and
is stopped after the test whatever happened.
"""
import base64
import fcntl
import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import pytest
from peers.fake_ntp import FakeNtp
from sim.simulate import Board  # noqa: E402
from testkit.helpers import free_port, merge  # noqa: E402
from testkit.paths import ROOT
from testkit.vm.lfcp_harness import Servers  # noqa: E402

ADMIN = ('admin', 'test-admin-pw')
_ntp = []  # this worker's fake NTP server, started with the first device


def fake_ntp():
    """'127.0.0.1:port' of the fake NTP server every device sets its clock from by default
    (a test that wants no NTP overrides time.servers)."""
    if not _ntp:
        _ntp.append(FakeNtp().start())
    return _ntp[0].address


def pytest_collection_modifyitems(config, items):
    for item in items:  # tests/system/ boots the firmware: `-m "not system"` leaves them out
        if os.sep + 'system' + os.sep in str(item.path):
            item.add_marker(pytest.mark.system)


class Device:
    def __init__(self, flash, cfg, board):
        self.flash = flash
        self.cfg = cfg
        self.board = board
        self.ports = {'control': cfg['http']['control_port'], 'stream': cfg['http']['stream_port'],
                      'admin': cfg['http']['admin_port']}

    def url(self, kind, path='/'):
        return 'http://127.0.0.1:%d%s' % (self.ports[kind], path)

    def get(self, kind, path='/', auth=None, timeout=10, data=None, headers=None):
        """(status, headers, body) of one request; HTTP errors are returned, not raised."""
        req = urllib.request.Request(self.url(kind, path), data=data, headers=headers or {})
        if auth:
            req.add_header('Authorization', 'Basic ' + base64.b64encode(('%s:%s' % auth).encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def admin(self, action, **form):
        data = urllib.parse.urlencode(form).encode()
        return self.get('admin', '/action/' + action, auth=ADMIN, data=data)

    def status(self):
        code, _, body = self.get('admin', '/status', auth=ADMIN)
        assert code == 200, body
        return json.loads(body)

    def stats(self):
        return self.board.read('camera_stats', {}) or {}

    def console(self):
        return self.board.console()

    def wait_console(self, text, timeout=15):
        return self.board.wait_for(lambda b: text in b.console(), timeout)


@pytest.fixture
def firmware(tmp_path):
    made = []

    def start(overrides=None, heapsize=None, mpy=False, camera=None, air=None, ready=True, once=False,
              name='flash', files=None, env=None):
        cfg = {
            'device': {'name': 'testcam'},
            'http': {'bind': '127.0.0.1', 'control_port': free_port(), 'stream_port': free_port(),
                     'admin_port': free_port()},
            'admin': {'user': ADMIN[0], 'password': ADMIN[1]},
            'camera': {'framesize': 'VGA'},
            'wifi': {'ap_password': 'test-ap-pass', 'upstream': [{'ssid': 'home', 'password': 'home-pass-1'}]},
            # Nothing a test starts may send off this machine: no Internet probe, discovery
            # and Telegram on loopback unless the test points them at its own peers.
            'internet': {'probe': []},
            'upnp': {'ssdp': '127.0.0.1:%d' % free_port()},
            'telegram': {'api_url': 'https://127.0.0.1:%d' % free_port()},
            'time': {'servers': [fake_ntp()]},   # the board's clock starts at 2000 until set
        }
        merge(cfg, overrides)
        flash = tmp_path / name
        (flash / '.sim').mkdir(parents=True, exist_ok=True)
        (flash / 'config.json').write_text(json.dumps(cfg))
        for path, text in (files or {}).items():  # state files already on the board's flash
            (flash / path).write_text(text)
        if camera:
            (flash / '.sim' / 'camera.json').write_text(json.dumps(camera))
        if air:
            (flash / '.sim' / 'air.json').write_text(json.dumps(air))
        board = Board(str(flash), heapsize=heapsize, mpy=mpy, once=once, env=env)
        dev = Device(flash, cfg, board)
        made.append(dev)
        board.start()
        if ready:
            assert board.wait_ready(list(dev.ports.values()), timeout=30), \
                'firmware did not come up:\n' + board.console()[-3000:]
        return dev

    yield start
    for dev in made:
        dev.board.stop()


class _Build:
    """`make build`, one at a time across the parallel workers (they share build/)."""

    def lock(self):
        os.makedirs(os.path.join(ROOT, 'build'), exist_ok=True)
        return _FileLock(os.path.join(ROOT, 'build', '.lock'))

    def __call__(self, locked=False):
        if not locked:
            with self.lock():
                return self(locked=True)
        r = subprocess.run(['make', '-s', 'build'], cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr


class _FileLock:
    def __init__(self, path):
        self.f = open(path, 'w')

    def __enter__(self):
        fcntl.flock(self.f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.f, fcntl.LOCK_UN)
        self.f.close()


@pytest.fixture
def make_build():
    return _Build()


@pytest.fixture
def servers():
    """Two reference LFCP management servers (A and B) on loopback."""
    s = Servers()
    yield s
    s.close()
