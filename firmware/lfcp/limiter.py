"""Rate limiting before any parsing, in bounded memory.

Each configured server has its own token bucket, so no amount of traffic from other addresses
can take its share. Everybody else ("strangers": LAN tools, junk, spoofed sources) shares one
budget of STRANGERS_SHARE x rate, and within it each address has its own bucket; at most SOURCES
addresses are tracked, the one idle longest makes room, and when all are busy newcomers share
one bucket. Memory: len(servers) + SOURCES + 2 buckets, whatever the traffic.
"""
import time

SOURCES = 16
STRANGERS_SHARE = 4


class Bucket:
    def __init__(self, rate, now):
        self.rate = rate  # datagrams per second, and the burst
        self.tokens = rate * 1000
        self.at = now

    def take(self, now):
        d = time.ticks_diff(now, self.at)
        t = self.tokens + (d if d < 1000 else 1000) * self.rate
        cap = self.rate * 1000
        self.tokens = t if t < cap else cap
        self.at = now
        if self.tokens < 1000:
            return False
        self.tokens -= 1000
        return True


class Limiter:
    def __init__(self, rate, servers):
        now = time.ticks_ms()
        self.rate = rate
        self.servers = [Bucket(rate, now) for _ in range(servers)]
        self.strangers = Bucket(rate * STRANGERS_SHARE, now)
        self.crowd = Bucket(rate, now)  # the newcomers while every tracked slot is busy
        self.sources = {}

    def allow_server(self, i):
        return self.servers[i].take(time.ticks_ms())

    def allow(self, addr):
        now = time.ticks_ms()
        b = self.sources.get(addr)
        if b is None:
            b = self._slot(addr, now)
        return b.take(now) and self.strangers.take(now)

    def _slot(self, addr, now):
        src = self.sources
        if len(src) >= SOURCES:
            idle, oldest = 1000, None
            for k in src:
                d = time.ticks_diff(now, src[k].at)
                if d > idle:
                    idle, oldest = d, k
            if oldest is None:
                return self.crowd
            del src[oldest]
        b = src[addr] = Bucket(self.rate, now)
        return b
