"""A fake UPnP Internet Gateway Device on loopback, for the simulator and the tests (CPython).

It answers SSDP M-SEARCH (unicast on its own UDP port; optionally also multicast on an
interface), serves an IGD:1 or IGD:2 description and takes SOAP on WANIPConnection (or
WANPPPConnection) and WANCommonInterfaceConfig, keeping a real mapping table with leases. Its
fidelity is checked by Debian's `upnpc` (list, add, delete) in tests/test_upnp_fake.py.

Scripted behaviour for tests, set on the object (or by flags on the command line):
  taken      {port: client}  ports mapped to another device (AddPortMapping answers 718)
  permanent_only             AddPortMapping with a lease answers 725
  refuse     501 or 606      every AddPortMapping answers that fault
  faults     [(action, code)] one-shot faults, consumed in order of use
  external   the external address; change it to test the DDNS notification
  drop()     forget every mapping (a router reboot)
  public     what GET /echo answers (an "echo my address" service; None: the external address)

    python tools/peers/fake_igd.py --http 5000 --ssdp 1900 --external 198.51.100.7
"""
import argparse
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MCAST = '239.255.255.250'
FAULT_TEXT = {401: 'Invalid Action', 402: 'Invalid Args', 501: 'Action Failed',
              606: 'Action not authorized', 713: 'SpecifiedArrayIndexInvalid',
              714: 'NoSuchEntryInArray', 718: 'ConflictInMappingEntry',
              725: 'OnlyPermanentLeasesSupported'}
COMMON = 'urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1'


def _desc(version, service, uuid):
    dev = 'urn:schemas-upnp-org:device:%s:%d'
    return ('<?xml version="1.0"?>\r\n<root xmlns="urn:schemas-upnp-org:device-1-0">'
            '<specVersion><major>1</major><minor>%d</minor></specVersion>'
            '<device><deviceType>%s</deviceType><friendlyName>Fake IGD</friendlyName>'
            '<manufacturer>tests</manufacturer><modelName>fake</modelName>'
            '<UDN>uuid:%s</UDN><serviceList/>'
            '<deviceList><device><deviceType>%s</deviceType><friendlyName>WAN</friendlyName>'
            '<UDN>uuid:%s-1</UDN><serviceList><service><serviceType>%s</serviceType>'
            '<serviceId>urn:upnp-org:serviceId:WANCommonIFC1</serviceId>'
            '<controlURL>/ctl/CmnIfCfg</controlURL><eventSubURL>/evt/CmnIfCfg</eventSubURL>'
            '<SCPDURL>/WANCfg.xml</SCPDURL></service></serviceList>'
            '<deviceList><device><deviceType>%s</deviceType><friendlyName>WANConn</friendlyName>'
            '<UDN>uuid:%s-2</UDN><serviceList><service><serviceType>%s</serviceType>'
            '<serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>'
            '<controlURL>/ctl/IPConn</controlURL><eventSubURL>/evt/IPConn</eventSubURL>'
            '<SCPDURL>/WANIPCn.xml</SCPDURL></service></serviceList></device></deviceList>'
            '</device></deviceList></device></root>\r\n') % (
        version - 1, dev % ('InternetGatewayDevice', version), uuid,
        dev % ('WANDevice', version), uuid, COMMON,
        dev % ('WANConnectionDevice', version), uuid, service)


def _scpd(actions):
    return ('<?xml version="1.0"?>\r\n<scpd xmlns="urn:schemas-upnp-org:service-1-0">'
            '<specVersion><major>1</major><minor>0</minor></specVersion><actionList>%s'
            '</actionList><serviceStateTable/></scpd>\r\n'
            % ''.join('<action><name>%s</name></action>' % a for a in actions))


def _envelope(inner):
    return ('<?xml version="1.0"?>\r\n<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/'
            'envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>'
            '%s</s:Body></s:Envelope>\r\n' % inner)


def _fault(code):
    return _envelope('<s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError'
                     '</faultstring><detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0">'
                     '<errorCode>%d</errorCode><errorDescription>%s</errorDescription>'
                     '</UPnPError></detail></s:Fault>' % (code, FAULT_TEXT.get(code, 'Error')))


def _args(body):
    """The argument elements of a SOAP action: {name: text}. Prefixes are ignored."""
    m = re.search(r'<(?:\w+:)?Body[^>]*>\s*<(?:\w+:)?(\w+)[^>]*>(.*)</(?:\w+:)?\1\s*>', body, re.S)
    if not m:
        m = re.search(r'<(?:\w+:)?Body[^>]*>\s*<(?:\w+:)?(\w+)[^>]*/>', body, re.S)
        return (m.group(1) if m else None), {}
    args = {}
    for k, v in re.findall(r'<(\w+)(?:\s[^>]*)?>([^<]*)</\1>', m.group(2)):
        args[k] = v.replace('&lt;', '<').replace('&gt;', '>').replace('&amp;', '&')
    for k in re.findall(r'<(\w+)\s*/>', m.group(2)):
        args[k] = ''
    return m.group(1), args


class FakeIGD:
    def __init__(self, host='127.0.0.1', http_port=0, ssdp_port=0, external='198.51.100.7',
                 version=1, service=None, multicast_if=None):
        self.host = host
        self.version = version
        self.service = service or 'urn:schemas-upnp-org:service:WANIPConnection:%d' % (
            2 if version == 2 else 1)
        self.external = external
        self.public = None
        self.uuid = '5c7b6a33-1d2e-4f00-9a5e-000000000001'
        self.mappings = {}  # (ext port, proto) -> dict
        self.taken = {}
        self.permanent_only = False
        self.refuse = None
        self.faults = []
        self.calls = []     # (action, args) in order, for the tests
        self.searches = 0
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def log_message(self, *a):
                pass

            def _send(self, code, body, ctype='text/xml; charset="utf-8"'):
                data = body.encode()
                self.send_response(code)
                self.send_header('Content-Type', ctype)
                self.send_header('Content-Length', str(len(data)))
                self.send_header('Connection', 'close')
                self.end_headers()
                self.wfile.write(data)
                self.close_connection = True

            def do_GET(self):
                if self.path == '/rootDesc.xml':
                    self._send(200, _desc(fake.version, fake.service, fake.uuid))
                elif self.path == '/echo':
                    self._send(200, '%s\n' % (fake.public or fake.external), 'text/plain')
                elif self.path in ('/WANIPCn.xml', '/WANCfg.xml'):
                    self._send(200, _scpd(['GetExternalIPAddress', 'AddPortMapping']))
                else:
                    self._send(404, '<html>not found</html>', 'text/html')

            def do_POST(self):
                n = int(self.headers.get('Content-Length') or 0)
                body = self.rfile.read(n).decode('utf-8', 'replace')
                sa = (self.headers.get('SOAPAction') or '').strip('"')
                stype, _, action = sa.partition('#')
                name, args = _args(body)
                if not action or name != action:
                    return self._send(500, _fault(401))
                code, out = fake.soap(self.path, stype, action, args)
                if code:
                    return self._send(500, _fault(code))
                inner = ''.join('<%s>%s</%s>' % (k, v, k) for k, v in out)
                self._send(200, _envelope('<u:%sResponse xmlns:u="%s">%s</u:%sResponse>'
                                          % (action, stype, inner, action)))

        self.http = ThreadingHTTPServer((host, http_port), Handler)
        self.http.daemon_threads = True
        self.http_port = self.http.server_address[1]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if multicast_if:  # listen on the SSDP group too, like a router (netns tests, upnpc)
            self.udp.bind(('', ssdp_port or 1900))
            self.udp.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                                socket.inet_aton(MCAST) + socket.inet_aton(multicast_if))
        else:
            self.udp.bind((host, ssdp_port))
        self.udp.settimeout(0.2)
        self.ssdp_port = self.udp.getsockname()[1]
        self._stop = False
        self._threads = []

    @property
    def location(self):
        return 'http://%s:%d/rootDesc.xml' % (self.host, self.http_port)

    def start(self):
        for fn in (self.http.serve_forever, self._ssdp):
            t = threading.Thread(target=fn, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self):
        self._stop = True
        self.http.shutdown()
        self.http.server_close()
        for t in self._threads:
            t.join(2)
        self.udp.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()

    def _ssdp(self):
        while not self._stop:
            try:
                data, peer = self.udp.recvfrom(2048)
            except (socket.timeout, OSError):
                continue
            text = data.decode('latin-1')
            if not text.startswith('M-SEARCH'):
                continue
            st = ''
            for line in text.split('\r\n'):
                k, _, v = line.partition(':')
                if k.strip().lower() == 'st':
                    st = v.strip()
            dev = 'urn:schemas-upnp-org:device:InternetGatewayDevice:%d' % self.version
            ok = (st in ('ssdp:all', 'upnp:rootdevice', dev, self.service) or
                  (self.version == 2 and st.endswith('InternetGatewayDevice:1')))
            if not ok:
                continue
            self.searches += 1
            reply = ('HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: %s\r\n'
                     'USN: uuid:%s::%s\r\nEXT:\r\nSERVER: Linux UPnP/1.1 fake/1.0\r\n'
                     'LOCATION: %s\r\n\r\n' % (st, self.uuid, st, self.location))
            try:
                self.udp.sendto(reply.encode(), peer)
            except OSError:
                pass

    # -- the mapping table ---------------------------------------------------------------------

    def _expire(self):
        now = time.monotonic()
        for k in [k for k, m in self.mappings.items() if m['expires'] and m['expires'] <= now]:
            del self.mappings[k]

    def mapping(self, port, proto='TCP'):
        with self.lock:
            self._expire()
            return self.mappings.get((port, proto))

    def drop(self):
        with self.lock:
            self.mappings.clear()

    def soap(self, path, stype, action, a):
        with self.lock:
            self.calls.append((action, dict(a)))
            for i, (act, code) in enumerate(self.faults):
                if act == action:
                    del self.faults[i]
                    return code, ()
            self._expire()
            if path == '/ctl/CmnIfCfg' and stype == COMMON:
                return self._common(action)
            if path != '/ctl/IPConn' or stype != self.service:
                return 401, ()
            fn = getattr(self, '_do_' + action, None)
            if fn is None:
                return 401, ()
            try:
                return fn(a)
            except (KeyError, ValueError):
                return 402, ()

    def _common(self, action):
        if action == 'GetCommonLinkProperties':
            return 0, (('NewWANAccessType', 'Ethernet'), ('NewLayer1UpstreamMaxBitRate', 1000000),
                       ('NewLayer1DownstreamMaxBitRate', 1000000),
                       ('NewPhysicalLinkStatus', 'Up'))
        if action.startswith('GetTotal'):
            return 0, (('New' + action[3:], 0),)
        return 401, ()

    def _do_GetExternalIPAddress(self, a):
        return 0, (('NewExternalIPAddress', self.external),)

    def _do_GetStatusInfo(self, a):
        return 0, (('NewConnectionStatus', 'Connected'), ('NewLastConnectionError', 'ERROR_NONE'),
                   ('NewUptime', 100))

    def _do_GetConnectionTypeInfo(self, a):
        return 0, (('NewConnectionType', 'IP_Routed'), ('NewPossibleConnectionTypes', 'IP_Routed'))

    def _do_AddPortMapping(self, a):
        port, proto = int(a['NewExternalPort']), a['NewProtocol'].upper()
        client, lease = a['NewInternalClient'], int(a.get('NewLeaseDuration') or 0)
        if proto not in ('TCP', 'UDP') or not 0 < port < 65536 or not client:
            return 402, ()
        if self.refuse:
            return self.refuse, ()
        if self.permanent_only and lease:
            return 725, ()
        if port in self.taken and self.taken[port] != client:
            return 718, ()
        old = self.mappings.get((port, proto))
        if old and old['client'] != client:
            return 718, ()
        self.mappings[(port, proto)] = {
            'client': client, 'port': int(a['NewInternalPort']), 'proto': proto,
            'desc': a.get('NewPortMappingDescription', ''), 'lease': lease,
            'enabled': a.get('NewEnabled', '1'), 'remote': a.get('NewRemoteHost', ''),
            'expires': time.monotonic() + lease if lease else 0}
        return 0, ()

    def _do_DeletePortMapping(self, a):
        key = (int(a['NewExternalPort']), a['NewProtocol'].upper())
        if key not in self.mappings:
            return 714, ()
        del self.mappings[key]
        return 0, ()

    def _entry(self, port, m):
        left = max(0, int(m['expires'] - time.monotonic())) if m['expires'] else 0
        return (('NewInternalPort', m['port']), ('NewInternalClient', m['client']),
                ('NewEnabled', m['enabled']), ('NewPortMappingDescription', m['desc']),
                ('NewLeaseDuration', left))

    def _do_GetSpecificPortMappingEntry(self, a):
        key = (int(a['NewExternalPort']), a['NewProtocol'].upper())
        if key in self.mappings:
            return 0, self._entry(key[0], self.mappings[key])
        if key[0] in self.taken:
            return 0, (('NewInternalPort', key[0]), ('NewInternalClient', self.taken[key[0]]),
                       ('NewEnabled', 1), ('NewPortMappingDescription', 'other'),
                       ('NewLeaseDuration', 0))
        return 714, ()

    def _do_GetGenericPortMappingEntry(self, a):
        i = int(a['NewPortMappingIndex'])
        items = sorted(self.mappings.items())
        if not 0 <= i < len(items):
            return 713, ()
        (port, proto), m = items[i]
        return 0, (('NewRemoteHost', m['remote']), ('NewExternalPort', port),
                   ('NewProtocol', proto)) + self._entry(port, m)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--host', default='127.0.0.1')
    ap.add_argument('--http', type=int, default=0, help='HTTP port (0: any)')
    ap.add_argument('--ssdp', type=int, default=1900, help='SSDP UDP port on --host')
    ap.add_argument('--external', default='198.51.100.7')
    ap.add_argument('--igd', type=int, default=1, choices=(1, 2))
    ap.add_argument('--multicast-if', help='also join the SSDP group on this interface address')
    ap.add_argument('--taken', type=int, action='append', default=[],
                    help='a port mapped to another device (718)')
    ap.add_argument('--permanent-only', action='store_true', help='answer 725 to leases')
    ap.add_argument('--refuse', type=int, choices=(501, 606), help='refuse every mapping')
    o = ap.parse_args()
    igd = FakeIGD(o.host, o.http, o.ssdp, o.external, o.igd, multicast_if=o.multicast_if)
    igd.taken = dict((p, '192.0.2.99') for p in o.taken)
    igd.permanent_only, igd.refuse = o.permanent_only, o.refuse
    igd.start()
    print('fake IGD: %s, SSDP on %s:%d' % (igd.location, o.host, igd.ssdp_port), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        igd.stop()


if __name__ == '__main__':
    main()
