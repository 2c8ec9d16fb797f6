"""UPnP IGD client: find the router, map a TCP port to us, read the router's external address.

Just what a port forward needs: SSDP M-SEARCH on a non-blocking UDP socket polled with short
sleeps (the loop keeps running), the device description scanned for WANIPConnection:2/:1 or
WANPPPConnection:1, and SOAP calls over the firmware's one HTTP client. Router faults become
UPnPError with a sentence a user can act on; `.code` keeps the UPnP error number.
"""
import asyncio
import select
import socket
import sys
import time

from firmware.net.http_client import request

SSDP = ('239.255.255.250', 1900)
DEVICES = ('urn:schemas-upnp-org:device:InternetGatewayDevice:2',
           'urn:schemas-upnp-org:device:InternetGatewayDevice:1')
SERVICES = ('urn:schemas-upnp-org:service:WANIPConnection:2',
            'urn:schemas-upnp-org:service:WANIPConnection:1',
            'urn:schemas-upnp-org:service:WANPPPConnection:1')

REASONS = {
    401: 'the router does not know this action (401 Invalid Action)',
    402: 'the router rejected the arguments (402 Invalid Args)',
    501: 'the router refuses to map the port (501 Action Failed): UPnP forwarding is blocked or '
         'the router has no public WAN address',
    606: 'the router refuses: action not authorized (606); allow UPnP port mapping for this '
         'device in the router settings',
    714: 'no such port mapping on the router (714)',
    718: 'the external port is already mapped to another device (718)',
    724: 'the router needs the same internal and external port (724)',
    725: 'the router only supports permanent leases (725)',
    728: 'the router has no room for more port mappings (728)',
    729: 'the port conflicts with another forwarding mechanism on the router (729)',
}
# IP_MULTICAST_TTL is not exported by MicroPython's socket module; the values are the platform's.
_TTL_OPT = {'linux': (0, 33), 'esp32': (0, 5)}


class UPnPError(Exception):
    """A refusal or failure, with the UPnP error code (None when it is not a SOAP fault)."""

    def __init__(self, code, text):
        super().__init__(text)
        self.code = code


def reason(code, desc=''):
    text = REASONS.get(code)
    if text is None:
        text = 'the router answered UPnP error %s%s' % (code, ' (%s)' % desc if desc else '')
    return text


def _open(text, name, start=0):
    """Index just past the first <name ...> or <prefix:name ...> tag at or after `start`, or -1.

    A scan, not a parser: descriptions and SOAP answers are flat enough, and this costs no RAM.
    """
    n = len(name)
    i = start
    while True:
        i = text.find(name, i)
        if i < 1:
            return -1
        j = i + n
        if j < len(text) and text[j] in '> /\t\r\n':
            if text[i - 1] == '<':
                return text.find('>', j) + 1
            lt = text.rfind('<', 0, i)
            if text[i - 1] == ':' and lt > text.rfind('>', 0, i) and text[lt + 1] != '/':
                return text.find('>', j) + 1
        i = j


def _text(text, k):
    """Content of the element whose opening tag ends just before index k ('' if it is <x/>)."""
    if text[k - 2] == '/':
        return ''
    e = text.find('<', k)
    return unescape(text[k:e].strip()) if e > 0 else None


def tag(text, name, start=0):
    """Text of the first <name> (any prefix) element at or after `start`, or None."""
    k = _open(text, name, start)
    return _text(text, k) if k > 0 else None


def unescape(s):
    if '&' in s:
        for a, b in (('&lt;', '<'), ('&gt;', '>'), ('&quot;', '"'), ('&apos;', "'"), ('&amp;', '&')):
            s = s.replace(a, b)
    return s


def escape(s):
    return str(s).replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')


def header(data, name):
    """Value of header `name` (lower case, as bytes) in an SSDP answer, as str, or None."""
    for line in data.split(b'\r\n'):
        c = line.find(b':')
        if c > 0 and line[:c].strip().lower() == name:
            return line[c + 1:].strip().decode()
    return None


def join(base, url):
    """Resolve a controlURL against the description's URLBase or LOCATION."""
    if url.startswith('http://') or url.startswith('https://'):
        return url
    s = base.find('//') + 2
    p = base.find('/', s)
    root = base if p < 0 else base[:p]
    if url.startswith('/'):
        return root + url
    d = base.rfind('/')
    return (base[:d + 1] if d >= s else root + '/') + url


def pick_service(xml):
    """(serviceType, controlURL) of the best connection service in a description, or None.

    Each serviceType pairs with the controlURL that follows it before the next serviceType (the
    order the UPnP device architecture prescribes).
    """
    best = None
    i = _open(xml, 'serviceType')
    while i > 0:
        nxt = _open(xml, 'serviceType', i)
        st = _text(xml, i)
        c = _open(xml, 'controlURL', i)
        url = _text(xml, c) if c > 0 and (nxt < 0 or c < nxt) else None
        if st in SERVICES and url and (best is None or SERVICES.index(st) < SERVICES.index(best[0])):
            best = (st, url)
        i = nxt
    return best


def msearch(st, mx=2):
    return ('M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\n'
            'MX: %d\r\nST: %s\r\n\r\n' % (mx, st)).encode()


async def discover(target=SSDP, wait_ms=2500, settle_ms=300):
    """LOCATION URLs of IGDs answering an M-SEARCH; stops `settle_ms` after the first answer.

    `target` is an (ip, port) pair; tests point it at a fake IGD on loopback.
    """
    addr = socket.getaddrinfo(target[0], target[1])[0][-1]  # a literal IP: no DNS wait
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    found = []
    try:
        opt = _TTL_OPT.get(sys.platform)
        if opt:
            try:
                s.setsockopt(opt[0], opt[1], 2)
            except OSError:
                pass
        s.setblocking(False)
        poller = select.poll()  # polled with a zero timeout: no exception per empty read
        poller.register(s, select.POLLIN)
        t0 = time.ticks_ms()
        deadline = wait_ms
        sent = 0
        while time.ticks_diff(time.ticks_ms(), t0) < deadline:
            if sent < 2 and time.ticks_diff(time.ticks_ms(), t0) >= sent * wait_ms // 3:
                for st in DEVICES:  # resent once: SSDP is UDP and M-SEARCH gets lost
                    s.sendto(msearch(st), addr)
                sent += 1
            if not poller.poll(0):
                await asyncio.sleep_ms(30)
                continue
            try:
                data = s.recv(1024)
            except OSError:
                continue
            loc = header(data, b'location')
            if loc and loc not in found and loc.startswith('http://'):
                found.append(loc)
                deadline = min(deadline, time.ticks_diff(time.ticks_ms(), t0) + settle_ms)
    finally:
        s.close()
    return found


class Igd:
    """One router connection service: SOAP actions on its control URL."""

    def __init__(self, location, service, control):
        self.location = location
        self.service = service
        self.control = control

    def __repr__(self):
        return 'Igd(%s)' % self.control

    async def call(self, action, args=(), timeout=8):
        body = ['<?xml version="1.0"?>\r\n<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/'
                'envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>'
                '<u:%s xmlns:u="%s">' % (action, self.service)]
        for k, v in args:
            body.append('<%s>%s</%s>' % (k, escape(v), k))
        body.append('</u:%s></s:Body></s:Envelope>\r\n' % action)
        body = ''.join(body).encode()
        hdrs = {'Content-Type': 'text/xml; charset="utf-8"',
                'SOAPAction': '"%s#%s"' % (self.service, action)}
        try:
            r = await request('POST', self.control, hdrs, body, timeout=timeout, max_body=8192)
        except OSError as e:
            raise UPnPError(None, 'the router did not answer %s (%s)' % (action, _oserr(e)))
        except ValueError as e:  # not HTTP, or an oversized answer
            raise UPnPError(None, 'the router answered %s with garbage (%s)' % (action, e))
        text = r.body.decode() if r.body else ''
        if r.status == 200:
            return text
        code = tag(text, 'errorCode')
        if code is not None and code.isdigit():
            raise UPnPError(int(code), reason(int(code), tag(text, 'errorDescription') or ''))
        raise UPnPError(None, 'the router answered HTTP %d to %s' % (r.status, action))

    async def external_ip(self):
        ip = tag(await self.call('GetExternalIPAddress'), 'NewExternalIPAddress')
        return ip or ''

    async def add(self, ext, port, client, lease, desc, proto='TCP'):
        await self.call('AddPortMapping', (
            ('NewRemoteHost', ''), ('NewExternalPort', ext), ('NewProtocol', proto),
            ('NewInternalPort', port), ('NewInternalClient', client), ('NewEnabled', 1),
            ('NewPortMappingDescription', desc), ('NewLeaseDuration', lease)))

    async def delete(self, ext, proto='TCP'):
        await self.call('DeletePortMapping', (
            ('NewRemoteHost', ''), ('NewExternalPort', ext), ('NewProtocol', proto)))

    async def entry(self, ext, proto='TCP'):
        """(client, internal port, lease left) of the mapping on `ext`, or None if there is none."""
        try:
            x = await self.call('GetSpecificPortMappingEntry', (
                ('NewRemoteHost', ''), ('NewExternalPort', ext), ('NewProtocol', proto)))
        except UPnPError as e:
            if e.code in (714, 402):  # some routers answer 402 for an unknown mapping
                return None
            raise
        port = tag(x, 'NewInternalPort') or '0'
        lease = tag(x, 'NewLeaseDuration') or '0'
        return (tag(x, 'NewInternalClient') or '', int(port) if port.isdigit() else 0,
                int(lease) if lease.isdigit() else 0)


async def describe(location):
    """Fetch a description and return an Igd for its connection service, or None."""
    try:
        r = await request('GET', location, timeout=8, max_body=24576)
    except (OSError, ValueError):
        return None
    if r.status != 200:
        return None
    xml = r.body.decode()
    svc = pick_service(xml)
    if not svc or not svc[1]:
        return None
    base = tag(xml, 'URLBase') or location
    return Igd(location, svc[0], join(base, svc[1]))


async def find(target=SSDP, wait_ms=2500):
    """The first IGD on the LAN with a WAN connection service; UPnPError says why there is none."""
    locs = await discover(target, wait_ms)
    if not locs:
        raise UPnPError(None, 'no UPnP router (IGD) answered on the LAN: is UPnP enabled on the router?')
    for loc in locs:
        igd = await describe(loc)
        if igd:
            return igd
    raise UPnPError(None, 'the UPnP device at %s has no WAN connection service' % locs[0])


def _oserr(e):
    return e.args[1] if len(e.args) > 1 else 'error %s' % e.errno
