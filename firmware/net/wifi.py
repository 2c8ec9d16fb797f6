"""The device's own access point, and the station that keeps an uplink through the upstream APs.

The access point is always up (WPA2, password from config), so the camera stays reachable on
site whatever happens upstream. The station tries the upstream access points in config order,
round-robin, skipping those a scan does not see, each for at most wifi.connect_timeout_s; on
loss it moves on to the next one. After wifi.rounds_before_fallback full rounds without success
it falls back: 'ap_only' turns the station off for wifi.fallback_sleep_s and then starts over;
'deepsleep' deep-sleeps the board for that long (the original firmware's behaviour).
The upstream list comes from config.json on flash only: no command can change it.
Every connection and loss is logged and announced on the bus as 'uplink' (True/False).
"""
import asyncio
import time

from firmware.core.events import UPLINK
from firmware.net import addresses

ROUND_PAUSE_S = 5     # between failed rounds: a scan blocks the VM for about 2 s
POLL_MS = 500         # connection state polling while connecting
WATCH_MS = 1000       # while connected


class Wifi:
    def __init__(self, network, cfg, log, bus, recovery=None, beat=None):
        self.net = network
        self.cfg = cfg
        self.log = log
        self.bus = bus
        self.recovery = recovery
        self._beat = beat or (lambda: None)
        self.sta = network.WLAN(network.STA_IF)
        self.ap = network.WLAN(network.AP_IF)
        self.state = 'idle'       # idle | scanning | connecting | connected | fallback
        self.ssid = None          # upstream the station is connected (or connecting) to
        self.next = 0             # index of the upstream AP to try first in the next round
        self.rounds = 0           # full rounds without success since the last connection
        self.connects = 0
        self.losses = 0
        self.failures = {}        # ssid -> last reason
        self.since = None         # ticks_ms of the last connection
        self.ap_on = False
        for ap in cfg.upstream:
            log.secret(ap.get('password', ''))
        log.secret(cfg.ap_password)
        # the reasons the driver gives up on one AP at once, without waiting for the timeout
        self._bad = {}
        for name, why in (('STAT_WRONG_PASSWORD', 'wrong password'),
                          ('STAT_NO_AP_FOUND', 'not found'),
                          ('STAT_HANDSHAKE_TIMEOUT', 'handshake failed (wrong password?)'),
                          ('STAT_CONNECT_FAIL', 'connect failed'),
                          ('STAT_ASSOC_FAIL', 'association failed')):
            code = getattr(network, name, None)
            if code is not None:
                self._bad[code] = why

    # --- access point ---------------------------------------------------------------------
    def start_ap(self):
        """Bring the own access point up; with no password configured it stays off."""
        c = self.cfg
        if not c.ap_password:
            self.log.warn('wifi: access point off: set wifi.ap_password (8+ characters) in '
                          'config.json to reach the camera on site')
            self.ap.active(False)
            self.ap_on = False
            return False
        try:
            self.ap.active(True)
            self.ap.config(ssid=c.ap_ssid, key=c.ap_password, channel=c.ap_channel,
                           security=getattr(self.net, 'AUTH_WPA2_PSK', 3))
            self.ap_on = True
            self.log('wifi: access point', c.ap_ssid, 'up on channel', c.ap_channel)
        except (OSError, ValueError) as e:
            self.ap_on = False
            self.log.error('wifi: access point failed:', repr(e))
        return self.ap_on

    # --- station --------------------------------------------------------------------------
    async def run(self):
        self.start_ap()
        if not self.cfg.upstream:
            self.log.warn('wifi: no upstream access point in config.json: access point only')
            self.sta.active(False)
            while True:
                await self._nap(3600)
        self.sta.active(True)
        # The failover below does the retrying: the driver gives up after one retry, so that
        # before 1.22, where a failing network reads "connecting" while the driver retries,
        # its reason (wrong password, not found) shows at once rather than at our timeout.
        self.sta.config(reconnects=1)
        while True:
            ok = await self._round()
            if ok:
                self.rounds = 0
                await self._stay()        # returns on loss; the next round starts after it
                continue
            self.rounds += 1
            if self.rounds >= self.cfg.rounds_before_fallback:
                await self._fallback()
                self.rounds = 0
            else:
                await self._nap(ROUND_PAUSE_S)

    async def _round(self):
        """Try every configured AP once, from self.next on; True when one connected."""
        aps = self.cfg.upstream
        seen = self._scan()
        n = len(aps)
        for k in range(n):
            i = (self.next + k) % n
            ssid = aps[i]['ssid']
            if seen is not None and ssid not in seen:
                self.failures[ssid] = 'not seen in scan'
                continue
            if await self._connect(ssid, aps[i].get('password', '')):
                self.next = (i + 1) % n   # on loss, the next round starts with the next AP
                return True
        self.next = 0
        self.log.warn('wifi: round %d of %d without an upstream access point (%s)' % (
            self.rounds + 1, self.cfg.rounds_before_fallback,
            ', '.join('%s: %s' % (a['ssid'], self.failures.get(a['ssid'], '?')) for a in aps)))
        return False

    def _scan(self):
        """SSIDs on the air, or None when the scan fails (then every AP is tried)."""
        self.state = 'scanning'
        self._halt()
        try:
            found = self.sta.scan()   # blocks the VM for 1.5-2.5 s on the ESP32
        except OSError as e:
            self.log.warn('wifi: scan failed:', repr(e))
            return None
        seen = set()
        for entry in found:
            s = entry[0]
            try:
                seen.add(s.decode() if isinstance(s, bytes) else s)
            except UnicodeError:
                pass
        return seen

    def _halt(self):
        """Stop the driver's own reconnect attempts (it retries one AP forever)."""
        try:
            self.sta.disconnect()
        except OSError:
            pass

    async def _connect(self, ssid, password):
        self.state = 'connecting'
        self.ssid = ssid
        self._halt()
        self.log('wifi: connecting to', ssid)
        try:
            self.sta.connect(ssid, password)
        except OSError as e:
            self.failures[ssid] = repr(e)
            self.log.warn('wifi:', ssid, 'connect refused:', repr(e))
            return False
        t0 = time.ticks_ms()
        limit = self.cfg.connect_timeout_s * 1000
        while time.ticks_diff(time.ticks_ms(), t0) < limit:
            await asyncio.sleep_ms(POLL_MS)
            self._beat()
            if self.sta.isconnected():
                self._up(ssid, time.ticks_diff(time.ticks_ms(), t0))
                return True
            why = self._bad.get(self.sta.status())
            if why:
                return self._fail(ssid, why)
        return self._fail(ssid, 'no connection within %d s' % self.cfg.connect_timeout_s)

    def _fail(self, ssid, why):
        self._halt()
        self.failures[ssid] = why
        self.ssid = None
        self.log.warn('wifi:', ssid, why)
        return False

    def _up(self, ssid, ms):
        self.state = 'connected'
        self.connects += 1
        self.since = time.ticks_ms()
        self.failures.pop(ssid, None)
        self.log('wifi: connected to', ssid, 'in', ms, 'ms, address', self.address())
        self.bus.emit(UPLINK, True)

    async def _stay(self):
        """Watch the connection; on loss announce it and return."""
        while self.sta.isconnected():
            self._check_ap()
            self._beat()
            await asyncio.sleep_ms(WATCH_MS)
        self.losses += 1
        self.log.warn('wifi: lost', self.ssid, 'after', self.uptime(), 's')
        self.state = 'idle'
        self.ssid = None
        self.since = None
        self._halt()
        self.bus.emit(UPLINK, False)

    def _check_ap(self):
        if self.ap_on and not self.ap.active():
            self.log.warn('wifi: access point went down, restarting it')
            self.start_ap()

    async def _fallback(self):
        c = self.cfg
        why = 'no upstream access point after %d rounds' % c.rounds_before_fallback
        if c.fallback == 'deepsleep' and self.recovery:
            self.state = 'fallback'
            self._halt()
            await self.recovery.deepsleep(c.fallback_sleep_s, why)
            return   # only reached when the sleep was refused (a restart already under way)
        self.state = 'fallback'
        self.log.warn('wifi:', why + ': access point only for', c.fallback_sleep_s, 's')
        self._halt()
        self.sta.active(False)
        await self._nap(c.fallback_sleep_s)
        self.sta.active(True)
        self.state = 'idle'

    async def _nap(self, seconds):
        """Sleep in short slices, beating and keeping the access point up meanwhile."""
        t0 = time.ticks_ms()
        while time.ticks_diff(time.ticks_ms(), t0) < seconds * 1000:
            self._beat()
            self._check_ap()
            await asyncio.sleep_ms(min(WATCH_MS, seconds * 1000))

    # --- reporting ------------------------------------------------------------------------
    def address(self):
        return addresses.lan(self.sta)[0]

    def uptime(self):
        return 0 if self.since is None else time.ticks_diff(time.ticks_ms(), self.since) // 1000

    def is_up(self):
        return self.state == 'connected'

    def status(self):
        s = {'ap': {'on': self.ap_on, 'ssid': self.cfg.ap_ssid}, 'state': self.state,
             'upstream': self.ssid, 'connected_s': self.uptime(), 'rounds_failed': self.rounds,
             'connects': self.connects, 'losses': self.losses, 'failures': self.failures}
        if self.state == 'connected':
            s['address'] = self.address()
            try:
                s['rssi'] = self.sta.status('rssi')
            except (OSError, ValueError):
                pass
        return s
