"""Sets the board's clock from NTP (SNTP, RFC 4330), without blocking the loop.

A board's RTC reads 2000-01-01 after a power-on. Once the uplink is up, the `time.servers` are
asked in order (one UDP request each, an answer awaited through asyncio's poller for at most
WAIT_MS); "gateway" is the router from DHCP. The first valid answer sets the RTC. No answer: retry
after 4 s, doubling up to 5 min, until one comes; then again every `time.resync_h` hours, and at
once when the uplink comes back.

A LAN attacker can answer too: a reply counts only if it is a server reply (mode 4) from a
synchronised server (stratum 1..15, leap indicator not 3) carrying a transmit time and, as its
origin time, the random stamp of our request; anything else is ignored and the wait goes on.
Names are resolved once per uplink (getaddrinfo blocks the whole VM); addresses never are.

Why not micropython-lib's ntptime: it blocks the VM for up to a second per try, reads floats
(single precision on the ESP32) and checks nothing of the reply.
"""
import asyncio
import os
import socket
import struct
import time
from errno import EAGAIN  # values differ between ports

from firmware.core import clock
from firmware.core.aio import readable
from firmware.core.events import CLOCK, UPLINK

PORT = 123
WAIT_MS = 2000
RETRY_S = 4
RETRY_MAX_S = 300
NTP_TO_UNIX = 2208988800     # seconds from 1900-01-01 (NTP era 0) to 1970-01-01


def request(stamp):
    """A client request (version 4, mode 3) whose transmit time is `stamp` (8 random bytes)."""
    return b'\x23' + bytes(39) + stamp


def parse(reply, stamp):
    """(seconds since 1970, microseconds) from a server's reply to the request with `stamp`;
    ValueError naming what is wrong with it otherwise."""
    if len(reply) < 48:
        raise ValueError('short reply (%d bytes)' % len(reply))
    if reply[0] & 7 != 4:
        raise ValueError('not a server reply (mode %d)' % (reply[0] & 7))
    if reply[0] >> 6 == 3:
        raise ValueError('server not synchronised')
    if not 1 <= reply[1] <= 15:
        raise ValueError('stratum %d' % reply[1])   # 0: a "kiss-o'-death" refusal
    if reply[24:32] != stamp:
        raise ValueError('not an answer to our request')
    secs, frac = struct.unpack('>II', reply[40:48])
    if not secs:
        raise ValueError('no transmit time')
    if secs < 0x80000000:        # NTP era 1 begins in 2036
        secs += 0x100000000
    return secs - NTP_TO_UNIX, (frac * 1000000) >> 32


def server_list(servers, gateway):
    """[(host, port)] of the configured servers; "gateway" becomes the router's address (left
    out while there is none)."""
    out = []
    for s in servers:
        host, _, port = s.partition(':')
        if host == 'gateway':
            host = gateway()
            if not host or host == '0.0.0.0':
                continue
        out.append((host, int(port) if port else PORT))
    return out


class TimeSync:
    def __init__(self, cfg, log, bus, rtc, gateway):
        self.cfg = cfg
        self.log = log
        self.bus = bus
        self.rtc = rtc
        self.gateway = gateway      # fn() -> the router's IPv4 address
        self.uplink = None
        self.server = None          # 'host:port' that set the clock last
        self.synced = None          # ticks_ms of the last sync
        self.tries = 0
        self.ignored = 0            # replies that failed validation
        self.last_error = None
        self._addrs = {}            # (host, port) -> sockaddr, for this uplink
        self._kick = asyncio.Event()
        bus.on(UPLINK, self._on_uplink)

    def _on_uplink(self, up):
        self.uplink = up
        self._addrs = {}
        if up:
            self._kick.set()

    def status(self):
        return {'set': clock.is_set(), 'server': self.server, 'tries': self.tries,
                'ignored': self.ignored, 'last_error': self.last_error,
                'synced_s_ago': time.ticks_diff(time.ticks_ms(), self.synced) // 1000
                if self.synced is not None else None}

    async def run(self):
        retry = RETRY_S
        while True:
            wait = self.cfg.resync_h * 3600
            if self.uplink:
                if await self.sync():
                    retry = RETRY_S
                else:
                    wait = retry
                    retry = min(retry * 2, RETRY_MAX_S)
            try:
                await asyncio.wait_for(self._kick.wait(), wait)
            except asyncio.TimeoutError:
                pass
            self._kick.clear()

    async def sync(self):
        """Ask the servers in order; True once one of them set the clock."""
        self.tries += 1
        for host, port in server_list(self.cfg.servers, self.gateway):
            where = '%s:%d' % (host, port)
            try:
                secs, us = await self._ask(host, port)
            except (OSError, ValueError, IndexError) as e:   # IndexError: a name without address
                self.last_error = '%s: %s' % (where, e.args[-1] if e.args else 'no address')
                continue
            was_set = clock.is_set()
            clock.set_unix(self.rtc, secs, us, 'ntp ' + where)
            self.server = where
            self.synced = time.ticks_ms()
            self.last_error = None
            if not was_set:
                self.log('time: set from %s: %s' % (where, clock.text()))
                self.bus.emit(CLOCK)
            return True
        self.log.warn('time: no NTP answer (%s)' % self.last_error)
        return False

    def _addr(self, host, port):
        a = self._addrs.get((host, port))
        if a is None:
            # blocks the VM for a name: once per uplink; an address returns at once
            a = self._addrs[(host, port)] = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0][-1]
        return a

    async def _ask(self, host, port):
        addr = self._addr(host, port)
        stamp = os.urandom(8)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.setblocking(False)
            s.connect(addr)       # only this server's datagrams reach the socket
            t0 = time.ticks_ms()
            s.send(request(stamp))
            said = False
            while True:
                left = WAIT_MS - time.ticks_diff(time.ticks_ms(), t0)
                if left <= 0:
                    raise OSError(110, 'no answer in %d ms' % WAIT_MS)
                try:
                    await asyncio.wait_for_ms(readable(s), left)
                except asyncio.TimeoutError:
                    continue
                try:
                    reply = s.recv(64)
                except OSError as e:
                    if e.errno == EAGAIN:   # woken without a datagram
                        continue
                    raise
                try:
                    secs, us = parse(reply, stamp)
                except ValueError as e:
                    self.ignored += 1
                    if not said:   # once per request: a flood of garbage must not flood the log
                        self.log.warn('time: %s:%d: reply ignored: %s' % (host, port, e.args[0]))
                        said = True
                    continue
                # the answer was sent about half the round trip ago
                us += time.ticks_diff(time.ticks_ms(), t0) * 500
                return secs + us // 1000000, us % 1000000
        finally:
            s.close()
