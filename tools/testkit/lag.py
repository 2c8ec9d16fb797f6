"""How far behind the camera a slow stream viewer is: a full-speed viewer that calibrates the
board's clock against the host's, and a viewer that takes one frame every 1/fps s (used by
tests/system/test_lwip.py and bench/bench_connections.py)."""
import socket
import threading
import time

from testkit.helpers import MjpegReader
from testkit.peers import wait


def stamp(h):
    """The capture time of a part, from CameraWebServer's X-Timestamp header (board clock)."""
    sec, _, usec = h['x-timestamp'].partition('.')
    return int(sec) + int(usec) / 1e6


class FullSpeed(threading.Thread):
    """A viewer that reads everything at once. Its frames arrive a few ms after capture, so the
    smallest (arrival - X-Timestamp) it sees is the offset between the host's clock and the
    board's; it also keeps the camera capturing at its full rate."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.reader = MjpegReader(port)
        self.offset = None
        self.frames = 0
        self.stop = threading.Event()
        self.t0 = self.t1 = time.monotonic()

    def run(self):
        self.t0 = time.monotonic()
        while not self.stop.is_set() and self.frames < 5000:
            h, _ = self.reader.frame()
            d = time.time() - stamp(h)
            self.offset = d if self.offset is None else min(self.offset, d)
            self.frames += 1
            self.t1 = time.monotonic()
        self.reader.close()

    def fps(self):
        return self.frames / max(1e-6, self.t1 - self.t0)


class Slow:
    """A client that takes one frame every 1/fps s, like a motion daemon polling a stream. It
    keeps its kernel's default receive buffer (Linux: tcp_rmem's default, 128 KB, which
    autotuning grows only as fast as the application reads): what a PC on the LAN would have."""

    def __init__(self, port, fps, src='127.0.0.2'):
        self.fps = fps
        self.sock = socket.socket()
        self.sock.bind((src, 0))
        self.sock.settimeout(10)
        self.sock.connect(('127.0.0.1', port))
        self.sock.sendall(b'GET /stream HTTP/1.1\r\nHost: x\r\n\r\n')
        self.buf = b''
        self.rcvbuf = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(16384)     # no more than it needs: a frame, not a backlog
            if not chunk:
                raise EOFError('stream closed')
            self.buf += chunk

    def frame(self):
        """(headers, jpeg) of the next part."""
        while True:
            i = self.buf.find(b'\r\n\r\n', self.buf.find(b'Content-Type: image/jpeg'))
            if b'Content-Type: image/jpeg' in self.buf and i >= 0:
                break
            self._need(len(self.buf) + 1)
        start = self.buf.index(b'Content-Type: image/jpeg')
        head = self.buf[start:i].decode('latin-1')
        h = {}
        for line in head.split('\r\n'):
            k, _, v = line.partition(':')
            h[k.strip().lower()] = v.strip()
        n = int(h['content-length'])
        self._need(i + 4 + n)
        jpeg, self.buf = self.buf[i + 4:i + 4 + n], self.buf[i + 4 + n:]
        return h, jpeg

    def ages(self, seconds, offset):
        """Age (s) of each frame it takes during `seconds`: arrival - capture - clock offset."""
        out = []
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < seconds:
            h, _ = self.frame()
            out.append(time.time() - stamp(h) - offset())
            n += 1
            pause = t0 + n / self.fps - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        return out

    def close(self):
        self.sock.close()


def slow_viewer_ages(port, fps, seconds):
    """Ages of the frames a viewer reading at `fps` takes for `seconds`, beside a full-speed
    viewer: (ages, the slow viewer's SO_RCVBUF, the FullSpeed viewer)."""
    fast = FullSpeed(port)
    fast.start()
    wait(lambda: fast.frames >= 10, 20, 'the full-speed viewer streams')
    slow = Slow(port, fps)
    try:
        ages = slow.ages(seconds, lambda: fast.offset)
    finally:
        slow.close()
        fast.stop.set()
        fast.join(10)
    return ages, slow.rcvbuf, fast
