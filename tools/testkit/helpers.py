"""Shared test helpers: required binaries, free ports, a tiny MJPEG reader."""
import base64
import os
import shutil
import socket
import threading
import time
import zlib

import pytest

CI = os.environ.get('CI') == 'true'


def need_binary(name, package=None):
    """Path of a Debian tool, or skip; in CI (CI=true) a missing tool fails the test instead."""
    path = shutil.which(name)
    if not path:
        why = '%s not installed (Debian package %s)' % (name, package or name)
        if CI:
            pytest.fail('CI must run this test: ' + why)
        pytest.skip(why)
    return path


# Each pytest-xdist worker (and a benchmark, as worker 0) hands out ports from its own range, below
# Linux's ephemeral range (32768+) so that no client socket takes one either: parallel workers
# never collide, a port is not handed out twice in a run, and checkouts of the repository side by
# side (worktrees) get ranges of their own.
_SPAN = 300
_worker = os.environ.get('PYTEST_XDIST_WORKER', 'gw0')
_checkout = zlib.crc32(os.path.abspath(__file__).encode()) % 8
_base = 12000 + _SPAN * (8 * _checkout + (int(_worker[2:]) % 8 if _worker[2:].isdigit() else 0))
_next = [0]


def _bindable(port):
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind(('127.0.0.1', port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def free_port(kind=socket.SOCK_STREAM):
    """A loopback port free for TCP and UDP, from this worker's range."""
    for _ in range(_SPAN):
        port = _base + _next[0] % _SPAN
        _next[0] += 1
        if _bindable(port):
            return port
    raise OSError('no free port in %d..%d' % (_base, _base + _SPAN))


def wait_port(port, timeout=20.0, host='127.0.0.1'):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def merge(base, extra):
    """Merge the nested dict `extra` (or None) into `base` in place; return `base`."""
    for k, v in (extra or {}).items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            merge(base[k], v)
        else:
            base[k] = v
    return base


class MjpegReader:
    """Reads a multipart/x-mixed-replace response from a raw socket, part by part."""

    def __init__(self, port, path='/stream', timeout=10.0, host='127.0.0.1'):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.sendall(('GET %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n' % (path, host, port)).encode())
        self.buf = b''
        head = self._until(b'\r\n\r\n')
        lines = head.decode('latin-1').split('\r\n')
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(':')
            self.headers[k.strip().lower()] = v.strip()
        ctype = self.headers.get('content-type', '')
        self.boundary = ctype.split('boundary=')[-1].encode() if 'boundary=' in ctype else None

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError('stream closed')
        self.buf += data

    def _until(self, marker):
        while marker not in self.buf:
            self._fill()
        i = self.buf.index(marker)
        out, self.buf = self.buf[:i], self.buf[i + len(marker):]
        return out

    def frame(self):
        """Next part: (headers dict, jpeg bytes)."""
        self._until(b'--' + self.boundary + b'\r\n')
        head = self._until(b'\r\n\r\n').decode('latin-1')
        h = {}
        for line in head.split('\r\n'):
            k, _, v = line.partition(':')
            h[k.strip().lower()] = v.strip()
        n = int(h['content-length'])
        while len(self.buf) < n:
            self._fill()
        jpeg, self.buf = self.buf[:n], self.buf[n:]
        return h, jpeg

    def close(self):
        self.sock.close()


def get_from(src, port, path, auth=None, timeout=10):
    """The whole answer (bytes) to one HTTP/1.0 GET from loopback source address `src` (another
    client than 127.0.0.1), with Basic `auth` = (user, password) if given."""
    s = socket.socket()
    s.settimeout(timeout)
    try:
        s.bind((src, 0))
        s.connect(('127.0.0.1', port))
        h = 'GET %s HTTP/1.0\r\nHost: 127.0.0.1:%d\r\n' % (path, port)
        if auth:
            h += 'Authorization: Basic %s\r\n' % base64.b64encode(('%s:%s' % auth).encode()).decode()
        s.sendall((h + '\r\n').encode())
        data = b''
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk
    finally:
        s.close()


def first_frames(port, n=8):
    """Seconds until each of n viewers that connect at the same instant has its first JPEG."""
    socks = []
    t0 = time.monotonic()
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(('127.0.0.1', port))
        socks.append(s)
    times = []
    for s in socks:
        s.setblocking(True)
        s.settimeout(10)
        s.sendall(b'GET /stream HTTP/1.1\r\n\r\n')
    for s in socks:
        buf = b''
        try:
            while b'\xff\xd8' not in buf:
                data = s.recv(65536)
                if not data:
                    raise OSError('closed before a frame: %r' % buf[:120])
                buf += data
            times.append(time.monotonic() - t0)
        except OSError as e:
            print('  burst viewer failed:', e)
            times.append(float('inf'))
        s.close()
    return times


class Viewers:
    """n MJPEG viewers in threads, each keeping the arrival times of its frames (benchmarks)."""

    def __init__(self, port, n, path='/stream'):
        self.times = [[] for _ in range(n)]
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._watch, args=(port, path, i), daemon=True)
                        for i in range(n)]
        for t in self.threads:
            t.start()

    def _watch(self, port, path, i):
        try:
            r = MjpegReader(port, path, timeout=10)
            while not self.stop.is_set():
                r.frame()
                self.times[i].append(time.monotonic())
            r.close()
        except (OSError, EOFError):
            pass

    def fps(self, t0, t1):
        """Each viewer's frames per second in [t0, t1)."""
        return [len([t for t in ts if t0 <= t < t1]) / (t1 - t0) for ts in self.times]

    def rate(self, t0, t1):
        """The slowest viewer's frames per second in [t0, t1], and the longest gap between frames."""
        fps = min(len([t for t in ts if t0 <= t <= t1]) / (t1 - t0) for ts in self.times)
        gap = 0
        for ts in self.times:
            w = [t for t in ts if t0 <= t <= t1]
            gap = max([gap] + [b - a for a, b in zip(w, w[1:])])
        return fps, gap

    def close(self):
        self.stop.set()
        for t in self.threads:
            t.join(15)
