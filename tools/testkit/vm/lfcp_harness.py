"""Test plumbing for LFCP: the firmware's service on the VM, reference servers in a thread, a NAT.

Everything listens on 127.0.0.1. Waits are bounded; they poll, they never assume a timing margin.
"""
import asyncio
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time

from testkit.paths import ROOT as REPO

MP = os.path.join(REPO, '.venv', 'bin', 'micropython')

from peers import lfcp_server  # noqa: E402

from testkit import helpers  # noqa: E402

KEY = 'test-key-0123456789abcdef'


def free_port(kind=socket.SOCK_DGRAM):
    """A free loopback port, UDP unless told otherwise (LFCP is UDP)."""
    return helpers.free_port(kind)


def wait(pred, timeout=10.0, what='condition'):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError('timed out after %.0fs waiting for %s' % (timeout, what))


class Device:
    """The LFCP service on the MicroPython VM (tools/testkit/vm/lfcp_driver.py) in a flash dir."""

    def __init__(self, flash, lfcp, name='cam1', env=None, port=None):
        self.flash = str(flash)
        self.name = name
        self.port = port or free_port()
        self.ctl = free_port()
        cfg = {'device': {'name': name}, 'lfcp': dict({'port': self.port}, **lfcp)}
        with open(os.path.join(self.flash, 'config.json'), 'w') as f:
            json.dump(cfg, f)
        self.env = dict(os.environ, MICROPYPATH=':'.join(
            ['.frozen', os.path.join(REPO, 'tools', 'sim', 'board'), os.path.join(REPO, 'lib'), REPO]),
            LFCP_CTL=str(self.ctl), **(env or {}))
        self.lines = []
        self.proc = None

    def start(self):
        self.lines = []
        self.proc = subprocess.Popen(
            [MP, '-X', 'heapsize=256K', os.path.join(REPO, 'tools', 'testkit', 'vm', 'lfcp_driver.py')],
            cwd=self.flash, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        wait(lambda: 'READY' in self.lines, 10, 'the VM to start')
        return self

    def _read(self, proc):
        for line in proc.stdout:
            self.lines.append(line.rstrip('\n'))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def exited(self):
        return self.proc.poll()

    def runs(self, name):
        return [ln for ln in self.lines if ln.startswith('RUN %s ' % name)]

    def control(self, text, timeout=3.0):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(timeout)
        try:
            for _ in range(3):
                s.sendto(text.encode(), ('127.0.0.1', self.ctl))
                try:
                    return s.recvfrom(4096)[0].decode()
                except socket.timeout:
                    continue
            raise AssertionError('no answer from the control socket')
        finally:
            s.close()

    def status(self):
        return json.loads(self.control('status'))

    def output(self):
        return '\n'.join(self.lines[-60:])


class Servers:
    """Reference servers (tools/peers/lfcp_server.py) on one asyncio loop in a thread."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.transports = {}

    def call(self, fn, *args):
        """Run fn(*args) on the loop thread and return its result."""
        done = queue.Queue()

        def go():
            try:
                done.put((True, fn(*args)))
            except Exception as e:  # handed back to the test thread
                done.put((False, e))
        self.loop.call_soon_threadsafe(go)
        ok, v = done.get(timeout=10)
        if not ok:
            raise v
        return v

    def start(self, key=KEY, port=0, **kw):
        srv = lfcp_server.LfcpServer(key, **kw)

        async def make():
            t, _ = await self.loop.create_datagram_endpoint(lambda: srv,
                                                            local_addr=('127.0.0.1', port))
            return t
        t = asyncio.run_coroutine_threadsafe(make(), self.loop).result(10)
        srv.port = t.get_extra_info('sockname')[1]
        self.transports[srv] = t
        return srv

    def stop_server(self, srv):
        self.call(self.transports.pop(srv).close)

    def close(self):
        for srv in list(self.transports):
            self.stop_server(srv)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def device(self, srv, name):
        return self.call(lambda: srv.devices.get(name))

    def commands(self, srv, name):
        return self.call(lambda: [c.as_dict() for d in [srv.devices.get(name)] if d
                                  for c in list(d.history) + list(d.queue)])


class Nat:
    """A UDP relay that plays a NAT router: the device talks to the relay's public side, which
    forwards from its own ephemeral port (a rewritten source port). rebind() changes that port,
    as a NAT does when a mapping expires. Every datagram is recorded; drop_up/drop_down lose some."""

    def __init__(self, target):
        self.target = target
        self.inside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.inside.bind(('127.0.0.1', 0))
        self.port = self.inside.getsockname()[1]
        self.outside = self._new_outside()
        self.device = None
        self.up = []  # datagrams device -> server
        self.down = []  # datagrams server -> device
        self.drop_up = None  # fn(datagram) -> True to lose it on the way to the server
        self.drop_down = None  # the same on the way back
        self.running = True
        self.lock = threading.Lock()
        threading.Thread(target=self._pump, daemon=True).start()

    def _new_outside(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(('127.0.0.1', 0))
        return s

    def outside_port(self):
        return self.outside.getsockname()[1]

    def rebind(self):
        with self.lock:
            old, self.outside = self.outside, self._new_outside()
        old.close()

    def _pump(self):
        import select
        while self.running:
            with self.lock:
                socks = [self.inside, self.outside]
            try:
                r, _, _ = select.select(socks, [], [], 0.1)
            except (OSError, ValueError):
                continue
            for s in r:
                try:
                    data, addr = s.recvfrom(2048)
                except OSError:
                    continue
                if s is self.inside:
                    self.device = addr
                    self.up.append(data)
                    if not (self.drop_up and self.drop_up(data)):
                        with self.lock:
                            self.outside.sendto(data, self.target)
                elif self.device:
                    self.down.append(data)
                    if not (self.drop_down and self.drop_down(data)):
                        self.inside.sendto(data, self.device)

    def close(self):
        self.running = False
        time.sleep(0.15)
        self.inside.close()
        self.outside.close()


def kind(data):
    """The type field of a datagram, for drop predicates and assertions."""
    f = data.split(b',')
    return f[1].decode() if len(f) > 1 else ''


def fields(data):
    return data.decode().split(',')
