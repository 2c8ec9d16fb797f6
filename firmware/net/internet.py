"""Internet probe: tells "uplink up but Internet down" apart from "uplink down".

A TCP connect to the configured host:port pairs, one after the other, each bounded by
internet.timeout_s; the first that answers means the Internet is reachable. Runs every
internet.interval_s, at once when the uplink comes back, and on demand (`await probe.check()`).
Announces 'internet' (True/False) on the bus when the answer changes.

Names are resolved once per uplink (getaddrinfo blocks the whole VM), IP literals never are.
The connect itself is a non-blocking socket waited on through asyncio's poller, so a silent
host costs only the timeout and never blocks the other tasks.
"""
import asyncio
import socket
import time
from errno import EAGAIN, EINPROGRESS  # values differ between ports (lwIP: 119)

from firmware.core.aio import writable
from firmware.core.events import INTERNET, UPLINK


def _is_ip(host):
    parts = host.split('.')
    return len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts)


class Internet:
    def __init__(self, cfg, log, bus):
        self.cfg = cfg
        self.log = log
        self.bus = bus
        self.targets = []
        for hp in cfg.probe:
            host, port = hp.split(':')
            self.targets.append((host, int(port)))
        self._addrs = {}           # (host, port) -> sockaddr, for this uplink
        self.up = None             # None until the first check
        self.uplink = None         # None: unknown (probe anyway); False: skip probing
        self.via = None            # the target that answered last
        self.checks = 0
        self.failures = 0
        self.last_error = None
        self.checked = None        # ticks_ms of the last check
        self._kick = asyncio.Event()
        bus.on(UPLINK, self._on_uplink)

    def _on_uplink(self, up):
        self.uplink = up
        self._addrs = {}           # a new uplink may have another resolver
        if up:
            self._kick.set()
        else:
            self._set(False)

    async def run(self):
        while True:
            if self.uplink is not False:
                await self.check()
            try:
                await asyncio.wait_for(self._kick.wait(), self.cfg.interval_s)
            except asyncio.TimeoutError:
                pass
            self._kick.clear()

    async def check(self):
        """Probe now; True when one of the targets accepted a TCP connection."""
        self.checks += 1
        ok = False
        for target in self.targets:
            err = await self._probe(target)
            if err is None:
                self.via = '%s:%d' % target
                ok = True
                break
            self.last_error = '%s:%d %s' % (target[0], target[1], err)
        if not ok:
            self.failures += 1
        self.checked = time.ticks_ms()
        self._set(ok)
        return ok

    def _set(self, up):
        if up != self.up:
            self.up = up
            if up:
                self.log('internet: reachable via', self.via)
            else:
                self.log.warn('internet: unreachable' + (
                    ' (' + self.last_error + ')' if self.last_error and self.uplink is not False
                    else ''))
            self.bus.emit(INTERNET, up)

    def _resolve(self, target):
        addr = self._addrs.get(target)
        if addr is None:
            # an IP literal resolves without DNS; a name blocks the VM, once per uplink
            addr = socket.getaddrinfo(target[0], target[1], 0, socket.SOCK_STREAM)[0][-1]
            self._addrs[target] = addr
        return addr

    async def _probe(self, target):
        """None on success, else a short reason."""
        try:
            addr = self._resolve(target)
        except OSError as e:
            return 'not resolved (%s)' % e
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setblocking(False)
            try:
                s.connect(addr)
            except OSError as e:
                if e.errno != EINPROGRESS:
                    return 'error %d' % e.errno
            await asyncio.wait_for_ms(writable(s), self.cfg.timeout_s * 1000)
            try:
                s.recv(1)          # data or EOF: a peer answered
            except OSError as e:
                if e.errno != EAGAIN:  # refused or reset: the connect failed
                    return 'error %d' % e.errno
            return None
        except asyncio.TimeoutError:
            return 'timeout'
        except OSError as e:
            return 'error %d' % e.errno
        finally:
            s.close()

    def status(self):
        age = None if self.checked is None else time.ticks_diff(time.ticks_ms(),
                                                                 self.checked) // 1000
        return {'up': self.up, 'via': self.via if self.up else None, 'checked_s_ago': age,
                'checks': self.checks, 'failures': self.failures, 'last_error': self.last_error}
