"""One SNTP exchange (RFC 4330) on the loop: the request, the reply's validation, the servers.

Loaded by firmware/net/ntp.py for each sync and dropped from the heap after it.

A LAN attacker can answer too: a reply counts only if it is a server reply (mode 4) from a
synchronised server (stratum 1..15, leap indicator not 3) carrying a transmit time and, as its
origin time, the random stamp of our request; anything else is ignored and the wait goes on.
Names are resolved once per uplink (getaddrinfo blocks the whole VM); addresses never are.
"""
import asyncio
import os
import socket
import struct
import time
from errno import EAGAIN  # values differ between ports

from firmware.core.aio import readable

PORT = 123
WAIT_MS = 2000
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
    """[(host, port, entry)] of the configured servers; "gateway" becomes the router's address
    (left out while there is none)."""
    out = []
    for s in servers:
        host, _, port = s.partition(':')
        if host == 'gateway':
            host = gateway()
            if not host or host == '0.0.0.0':
                continue
        out.append((host, int(port) if port else PORT, s))
    return out


def _addr(ts, host, port):
    if host.replace('.', '').isdigit():   # an address: no lookup, nothing to keep
        return socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0][-1]
    a = ts._addrs.get(host)
    if a is None:
        # blocks the VM: once per uplink
        a = ts._addrs[host] = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0][-1]
    return a


async def ask(ts, host, port):
    """(seconds since 1970, microseconds) from the server at host:port, or OSError/ValueError.
    Replies that fail validation are counted in ts.ignored (the TimeSync) and the wait goes on."""
    addr = _addr(ts, host, port)
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
                ts.ignored += 1
                if not said:   # once per request: a flood of garbage must not flood the log
                    ts.log.warn('time: %s:%d: reply ignored: %s' % (host, port, e.args[0]))
                    said = True
                continue
            # the answer was sent about half the round trip ago
            us += time.ticks_diff(time.ticks_ms(), t0) * 500
            return secs + us // 1000000, us % 1000000
    finally:
        s.close()
