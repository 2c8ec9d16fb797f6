"""Sets the board's clock from NTP (SNTP, RFC 4330), without blocking the loop.

A board's RTC reads 2000-01-01 after a power-on. Once the uplink is up, the `time.servers` are
asked in order (one UDP request each, an answer awaited through asyncio's poller for at most
2 s); "gateway" is the router from DHCP. The first valid answer sets the RTC. No answer: retry
after 4 s, doubling up to 5 min, until one comes; then again every `time.resync_h` hours, and at
once when the uplink comes back. The exchange itself (firmware/net/sntp.py, with the checks of
the replies) is loaded for each sync and dropped after: between syncs only this stays.

Why not micropython-lib's ntptime: it blocks the VM for up to a second per try, reads floats
(single precision on the ESP32) and checks nothing of the reply.
"""
import asyncio
import sys

import firmware.net
from firmware.core import clock
from firmware.core.events import CLOCK, UPLINK

RETRY_S = 4
RETRY_MAX_S = 300


class TimeSync:
    def __init__(self, cfg, log, bus, rtc, gateway):
        self.cfg = cfg
        self.log = log
        self.bus = bus
        self.rtc = rtc
        self.gateway = gateway      # fn() -> the router's IPv4 address
        self.uplink = None
        # Nothing made at sync time stays in the heap (a string kept then would sit in the middle
        # of the free space that frames need in one piece): the entry is the config's own string.
        self.server = None          # the time.servers entry that set the clock last
        self.synced = None          # clock.uptime_s() of the last sync
        self.tries = 0
        self.ignored = 0            # replies that failed validation
        self.last_error = None
        self._addrs = {}            # name -> sockaddr, for this uplink
        self._kick = False          # sync at once (the uplink came back)
        bus.on(UPLINK, self._on_uplink)

    def _on_uplink(self, up):
        self.uplink = self._kick = up
        self._addrs = {}

    def status(self):
        return {'set': clock.is_set(), 'server': self.server, 'tries': self.tries,
                'ignored': self.ignored, 'last_error': self.last_error,
                'synced_s_ago': clock.uptime_s() - self.synced if self.synced is not None else None}

    async def run(self):
        retry = RETRY_S
        left = 0                    # seconds to the next sync
        while True:
            if self.uplink and (self._kick or left <= 0):
                self._kick = False
                if await self.sync():
                    retry = RETRY_S
                    left = self.cfg.resync_h * 3600
                else:
                    left = retry
                    retry = min(retry * 2, RETRY_MAX_S)
            # a one-second tick rather than an Event and wait_for: between syncs the task keeps
            # no wait objects, which would sit in the heap the frames need in one piece
            await asyncio.sleep(1)
            left -= 1

    async def sync(self):
        """Ask the servers in order; True once one of them set the clock."""
        from firmware.net import sntp
        try:
            return await self._sync(sntp)
        finally:
            del sys.modules['firmware.net.sntp']
            del firmware.net.sntp

    async def _sync(self, sntp):
        self.tries += 1
        for host, port, entry in sntp.server_list(self.cfg.servers, self.gateway):
            where = '%s:%d' % (host, port)
            try:
                secs, us = await sntp.ask(self, host, port)
            except (OSError, ValueError, IndexError) as e:   # IndexError: a name without address
                self.last_error = '%s: %s' % (where, e.args[-1] if e.args else 'no address')
                continue
            was_set = clock.is_set()
            clock.set_unix(self.rtc, secs, us, entry)
            self.server = entry
            self.synced = clock.uptime_s()
            self.last_error = None
            if not was_set:
                self.log('time: set from %s: %s' % (where, clock.text()))
                self.bus.emit(CLOCK)
            return True
        self.log.warn('time: no NTP answer (%s)' % self.last_error)
        return False
