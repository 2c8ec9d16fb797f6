"""/open and /close: a router port forward to the stream (or control) server, guarded by a secret.

/open maps an external port (upnp.external_port, the next ones on 718) to our server, makes a
fresh random key and answers the URL http://<external address>:<port>/...?key=<key>. While it is
open the web servers let a request from outside the LAN in only with that key (`allows`); /close
deletes the mapping and revokes the key. The run loop renews the lease, puts the mapping back if
the router lost it, and texts the new URL when the external address changes (Telegram as DDNS).
The port is written to flash before it is mapped, so a mapping left by a crash is deleted at the
next boot instead of staying open with no key guarding it.
"""
import asyncio
import binascii
import os
import time

from firmware.core import store
from firmware.core.commands import CommandError
from firmware.core.events import UPLINK
from firmware.core.secret import same
from firmware.net.wifi import addr4, gateway
from firmware.net.http_client import request
from firmware.remote import upnp

PATHS = {'stream': '/stream', 'control': '/'}
COOKIE = 'camkey'


def lan_addr():
    """(ip, netmask) of the station interface, ('0.0.0.0', '0.0.0.0') when it has none."""
    try:
        import network
        return addr4(network.WLAN(network.STA_IF))
    except Exception:
        return '0.0.0.0', '0.0.0.0'


def _ip4(s):
    try:
        p = [int(x) for x in s.split('.')]
    except (ValueError, AttributeError):
        return None
    if len(p) != 4 or min(p) < 0 or max(p) > 255:
        return None
    return (p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]


def first_ipv4(text):
    """The first dotted IPv4 address in an echo service's answer (plain text or JSON)."""
    i, n = 0, len(text)
    while i < n:
        if text[i].isdigit():
            j = i
            while j < n and (text[j].isdigit() or text[j] == '.'):
                j += 1
            if _ip4(text[i:j]) is not None:
                return text[i:j]
            i = j
        i += 1
    return None


def param(text, name, sep='&'):
    """Value of `name` in a query string (sep '&') or a Cookie header (sep ';'), or None."""
    for part in text.split(sep):
        part = part.strip()
        if part.startswith(name) and part[len(name):len(name) + 1] == '=':
            return part[len(name) + 1:]
    return None


class Exposure:
    def __init__(self, cfg, log, notify=None, bus=None, lan=lan_addr, state='upnp.json'):
        self.cfg = cfg
        self.log = log
        self.notify = notify  # fn(text), may be async: texts the allowed chats
        self.lan = lan
        self.path = state
        self.igd = None
        self.port = None      # external port while open
        self.client = None    # our LAN address the mapping points at
        self.lease = 0
        self.key = None
        self.external = ''
        self.public = ''
        self.error = None
        self.renewals = 0
        self.denied = 0       # requests refused by the guard
        self.stale = []       # mappings to delete (left by a crash, or a failed /close)
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._renew_at = self._check_at = 0
        self._tries = 0
        try:
            saved = store.load(state) or {}
        except ValueError:
            saved = {}
        for p in saved.get('ports', ()):
            if isinstance(p, int) and 0 < p < 65536:
                self.stale.append(p)
        if bus:
            bus.on(UPLINK, self._on_uplink)

    @property
    def required(self):
        """True while a forward is open (or one may be left on the router): outsiders need the key.

        With a mapping left from before and not yet deleted there is no key at all, so nobody
        from outside gets in until the cleanup is done.
        """
        return self.key is not None or bool(self.stale)

    def internal(self):
        u = self.cfg.upnp
        return self.cfg.http.control_port if u.expose == 'control' else self.cfg.http.stream_port

    def url(self, key=True):
        p = PATHS[self.cfg.upnp.expose]
        return 'http://%s:%d%s%s' % (self.external or '?', self.port or 0, p,
                                     ('?key=' + self.key) if key and self.key else '')

    # -- the web layer's gate ------------------------------------------------------------------

    def check(self, target, cookie=None):
        """True if the request target (path?query) or Cookie header carries the current key."""
        k = self.key
        if k is None:
            return False
        q = target.find('?')
        given = param(target[q + 1:], 'key') if q >= 0 else None
        if given is None and cookie:
            given = param(cookie, COOKIE, ';')
        return given is not None and same(given, k)

    def allows(self, peer, target, cookie=None):
        """May a request from `peer` (ip) for `target` pass? LAN peers always may."""
        if not self.required:
            return True
        ip, mask = self.lan()
        a, b, m = _ip4(peer), _ip4(ip), _ip4(mask)
        if a is not None and b and m and (a & m) == (b & m) and not self._gateway(peer):
            return True
        return self.check(target, cookie)

    def guard(self, req):
        """The web servers' hook for a microdot request: None lets it through, else a 403.

        Wire it to every route of the exposed server (a before_request). A request let in by the
        key in its query gets the key back as a cookie, so the control page's own requests
        (which carry no ?key=) work too.
        """
        if not self.required:
            return None
        peer = req.client_addr[0] if req.client_addr else ''
        cookie = req.headers.get('Cookie')
        if self.allows(peer, req.url, cookie):
            if self.key and not (cookie and COOKIE + '=' in cookie) and '?' in req.url:
                key = self.key
                req.after_request(lambda rq, res: self._set_cookie(res, key))
            return None
        self.denied += 1
        from firmware.web import common as web
        return web.error(403, 'forbidden: use the URL with the key from /open')

    def _set_cookie(self, res, key):
        res.headers['Set-Cookie'] = '%s=%s; Path=/; HttpOnly; SameSite=Strict' % (COOKIE, key)
        return res

    def _gateway(self, peer):
        # Routers that hairpin or masquerade forwarded traffic show it as coming from themselves.
        try:
            import network
            return gateway(network.WLAN(network.STA_IF)) == peer
        except Exception:
            return False

    # -- commands ------------------------------------------------------------------------------

    async def open(self, args=None):
        async with self._lock:
            if self.port is not None:
                return 'Already open: %s\n/close to close it.' % self.url()
            try:
                return await self._open()
            except upnp.UPnPError as e:
                self.error = str(e)
                raise CommandError('cannot open a port: ' + str(e))
            except OSError as e:
                self.error = 'network error %s' % e.errno
                raise CommandError('cannot open a port: network error %s' % e.errno)

    async def _open(self):
        u = self.cfg.upnp
        ip = self.lan()[0]
        if not _ip4(ip) or ip == '0.0.0.0':
            raise CommandError('cannot open a port: not connected to a router (no LAN address)')
        igd = await self._find()
        try:
            self.external = await igd.external_ip()
        except upnp.UPnPError as e:
            self.log.warn('upnp: no external address:', e)
            self.external = ''
        port = await self._map(igd, ip, u.external_port, u.lease_s)
        self.port, self.client, self.error = port, ip, None
        if port in self.stale:  # remapped to us just now: not to be cleaned up any more
            self.stale.remove(port)
        self.key = binascii.hexlify(os.urandom(12)).decode()
        self.log.secret(self.key)
        now = time.ticks_ms()
        self._renew_at = time.ticks_add(now, self._renew_ms())
        self._check_at = time.ticks_add(now, u.check_s * 1000)
        self._wake.set()
        self.log('upnp: port', port, '->', ip, self.internal(), 'lease', self.lease, 's')
        lines = ['Open: ' + self.url()]
        if not self.external or self.external == '0.0.0.0':
            lines.append('Warning: the router reports no external address; the URL will not work.')
        await self._check_public(lines)
        lines.append(('Lease %d s, renewed automatically. ' % self.lease if self.lease else
                      'Permanent mapping. ') + '/close to close it.')
        return '\n'.join(lines)

    async def _find(self):
        if self.igd is None:
            host, port = self.cfg.upnp.ssdp.split(':')
            self.igd = await upnp.find((host, int(port)))
            self.log('upnp: router at', self.igd.control)
        return self.igd

    async def _map(self, igd, ip, first, lease):
        """Map the first free port from `first` on; 718 moves on, 725 retries permanent."""
        n = self.cfg.upnp.port_range
        last = min(first + n - 1, 65535)
        desc = 'esp32cam %s' % self.cfg.device.name
        port = first
        reused = None
        saved = None
        while port <= last:
            if port != saved:       # a retry of the same port needs no second flash write
                self._save(port)
                saved = port
            try:
                await igd.add(port, self.internal(), ip, lease, desc)
                self.lease = lease
                return port
            except upnp.UPnPError as e:
                if e.code == 725 and lease:
                    self.log('upnp: router wants a permanent lease')
                    lease = 0
                    continue
                if e.code != 718:
                    if e.code is None and port not in self.stale:
                        # no answer (or a garbled one): the router may have mapped it all the
                        # same; keep the key check on until the clean-up has deleted it
                        self.stale.append(port)
                    self._save()
                    raise
            ent = await igd.entry(port)
            if ent and ent[0] == ip and ent[1] == self.internal() and reused != port:
                await igd.delete(port)  # our own mapping from before, shaped differently
                reused = port
                continue
            self.log('upnp: port', port, 'is taken (718)')
            port += 1
        self._save()
        raise upnp.UPnPError(718, 'external ports %d..%d are all mapped to other devices (718): '
                                  'free one on the router or raise upnp.port_range' % (first, last))

    async def close(self, args=None):
        async with self._lock:
            self.key = None  # revoked first: even if the router is unreachable the door is shut
            port, self.port = self.port, None
            self._wake.set()
            if port is None:
                return 'Port closed (none was open)'
            try:
                await self._delete(port)
            except upnp.UPnPError as e:
                self.stale.append(port)
                self.error = str(e)
                self._save()
                return ('Port closed; the router did not confirm (%s). The key is revoked; '
                        'deletion is retried.' % e)
            self._save()
            self.log('upnp: port', port, 'closed')
            return 'Port closed'

    async def _delete(self, port):
        try:
            await (await self._find()).delete(port)
        except upnp.UPnPError as e:
            if e.code != 714:  # already gone
                self.igd = None
                raise

    async def shutdown(self):
        """Called before a clean reboot or deep sleep: take the mapping down, bounded in time."""
        try:
            await asyncio.wait_for(self.close(), 6)
        except Exception as e:
            self.log.warn('upnp: close at shutdown failed:', repr(e))

    # -- background ----------------------------------------------------------------------------

    def _on_uplink(self, up):
        if up:  # a new DHCP lease may have moved us: re-check the mapping now
            self._check_at = self._renew_at = time.ticks_ms()
            self._wake.set()

    def _renew_ms(self):
        return min(max(self.lease * 500, 1000), 1 << 28) if self.lease else 1 << 28

    async def run(self):
        while True:
            wait = self._next_ms()
            if wait > 0:
                try:
                    await asyncio.wait_for_ms(self._wake.wait(), wait)
                except asyncio.TimeoutError:
                    pass
            self._wake.clear()
            try:
                await self._tick()
            except Exception as e:  # keep the loop: a router hiccup is retried on the next tick
                self.error = str(e)
                self.igd = None
                self.log.warn('upnp:', e)
                self._check_at = self._renew_at = time.ticks_add(time.ticks_ms(), 30000)
                await asyncio.sleep(1)

    def _next_ms(self):
        now = time.ticks_ms()
        wait = 1 << 28
        if self.port is not None:
            wait = max(0, min(time.ticks_diff(self._renew_at, now),
                              time.ticks_diff(self._check_at, now)))
        if self.stale and _ip4(self.lan()[0]):
            wait = min(wait, 30000 if self.error else 0)
        return wait

    async def _tick(self):
        async with self._lock:
            if self.stale and _ip4(self.lan()[0]):
                await self._clean()
            if self.port is None:
                return
            now = time.ticks_ms()
            if time.ticks_diff(now, self._renew_at) >= 0:
                await self._renew()
            if time.ticks_diff(now, self._check_at) >= 0:
                await self._watch()

    async def _clean(self):
        """Delete a mapping left from before, unless another device owns that port by now."""
        port = self.stale[0]
        self._tries += 1
        try:
            igd = await self._find()
            ent = await igd.entry(port)
            if ent and ent[0] == self.lan()[0] and port != self.port:
                await igd.delete(port)
        except upnp.UPnPError as e:
            if self._tries < 10:
                self.igd = None
                raise
            self.log.warn('upnp: giving up deleting port', port, '(its lease will end it):', e)
        self._tries = 0
        self.stale.pop(0)
        self.error = None
        self._save()
        self.log('upnp: cleaned up port', port, 'left from before')

    async def _renew(self):
        igd = await self._find()
        ip = self.lan()[0]
        try:
            ent = await igd.entry(self.port)
        except upnp.UPnPError as e:
            if e.code is None:
                raise
            ent = None  # the router cannot tell: just map again
        if ent and ent[0] not in (ip, self.client):
            await self._move(igd, ip)  # another device took our port after a lapse
        else:
            if ent and ent[0] != ip:
                await igd.delete(self.port)  # still pointing at our old DHCP address
            try:
                await igd.add(self.port, self.internal(), ip, self.lease,
                              'esp32cam %s' % self.cfg.device.name)
            except upnp.UPnPError as e:
                if e.code != 718:
                    raise
                await self._move(igd, ip)
        self.client = ip
        self.renewals += 1
        self.error = None
        self._renew_at = time.ticks_add(time.ticks_ms(), self._renew_ms())

    async def _move(self, igd, ip):
        old = self.port
        self.port = await self._map(igd, ip, old, self.lease)
        self.log.warn('upnp: port', old, 'was taken; now', self.port)
        await self._tell('Camera port moved: ' + self.url())

    async def _watch(self):
        if not self.lease:
            await self._renew()  # a permanent mapping is re-asserted: the router may have rebooted
        igd = await self._find()
        ext = await igd.external_ip()
        self._check_at = time.ticks_add(time.ticks_ms(), self.cfg.upnp.check_s * 1000)
        moved = ext and ext != self.external
        if moved:
            self.log('upnp: external address changed')
            self.external = ext
        old, warn = self.public, []
        await self._check_public(warn)
        lines = ['Camera address changed: ' + self.url()] if moved else []
        if moved or self.public != old:
            lines.extend(warn)
        if lines:
            await self._tell('\n'.join(lines))

    async def _check_public(self, lines):
        """Ask the echo service (if any) for the address the world sees; warn on double NAT."""
        url = self.cfg.upnp.echo_url
        if not url:
            return
        try:
            r = await request('GET', url, timeout=8, max_body=1024)
            ip = first_ipv4(r.body.decode()) if r.status == 200 else None
        except Exception as e:
            self.log.warn('upnp: echo service failed:', repr(e))
            return
        if not ip:
            return
        self.public = ip
        if ip != self.external:
            lines.append('Warning: the public address is %s but the router says %s: the router is '
                         'behind another NAT (double NAT); the URL may not work from outside.'
                         % (ip, self.external or 'nothing'))

    async def _tell(self, text):
        if self.notify is None:
            return
        try:
            r = self.notify(text)
            if r is not None and hasattr(r, 'send'):
                await r
        except Exception as e:
            self.log.warn('upnp: notify failed:', repr(e))

    def _save(self, trying=None):
        """Write every port we may have mapped, so a crash never leaves an unguarded forward."""
        ports = list(self.stale)
        for p in (self.port, trying):
            if p is not None and p not in ports:
                ports.append(p)
        try:
            store.save(self.path, {'ports': ports})
        except OSError as e:
            self.log.warn('upnp: cannot save state:', e)

    def status(self):
        return {'open': self.port is not None, 'port': self.port, 'internal': self.internal(),
                'external': self.external, 'public': self.public, 'lease': self.lease,
                'renewals': self.renewals, 'denied': self.denied,
                'router': self.igd.control if self.igd else None,
                'url': self.url(key=False) if self.port else None, 'key_required': self.required,
                'pending_delete': self.stale, 'error': self.error}
