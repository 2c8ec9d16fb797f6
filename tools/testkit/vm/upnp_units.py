# Parsing units of firmware/remote/upnp.py and firmware/remote/port_forward.py on the MicroPython VM.
#
# Without arguments: fixed cases (recorded miniupnpd 2.3.1 bodies, router variants); prints OK.
# With a JSON file argument: pick_service/join for each generated case (tests/test_upnp_units.py).
import json
import sys

from firmware.core.secret import same
from firmware.remote import upnp
from firmware.remote.ddns import first_ipv4
from firmware.remote.url_key import param

MINIUPNPD_DESC = '<?xml version="1.0"?>\n<root xmlns="urn:schemas-upnp-org:device-1-0" configId="1337"><specVersion><major>1</major><minor>1</minor></specVersion><device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:2</deviceType><friendlyName>netns test router</friendlyName><manufacturer>Debian</manufacturer><manufacturerURL>http://www.debian.org/</manufacturerURL><modelDescription>Debian router</modelDescription><modelName>Debian router</modelName><modelNumber>1</modelNumber><modelURL>http://www.debian.org/</modelURL><serialNumber>00000000</serialNumber><UDN>uuid:3d3cec3a-8cf0-11e0-98ee-001a6b0fdf3c</UDN><serviceList><service><serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1</serviceType><serviceId>urn:upnp-org:serviceId:L3Forwarding1</serviceId><SCPDURL>/L3F.xml</SCPDURL><controlURL>/ctl/L3F</controlURL><eventSubURL>/evt/L3F</eventSubURL></service><service><serviceType>urn:schemas-upnp-org:service:DeviceProtection:1</serviceType><serviceId>urn:upnp-org:serviceId:DeviceProtection1</serviceId><SCPDURL>/DP.xml</SCPDURL><controlURL>/ctl/DP</controlURL><eventSubURL>/evt/DP</eventSubURL></service></serviceList><deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:2</deviceType><friendlyName>WANDevice</friendlyName><manufacturer>MiniUPnP</manufacturer><manufacturerURL>http://miniupnp.free.fr/</manufacturerURL><modelDescription>WAN Device</modelDescription><modelName>WAN Device</modelName><modelNumber>20221221</modelNumber><modelURL>http://miniupnp.free.fr/</modelURL><serialNumber>00000000</serialNumber><UDN>uuid:3d3cec3a-8cf0-11e0-98ee-001a6b0fdf3d</UDN><UPC>000000000000</UPC><serviceList><service><serviceType>urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1</serviceType><serviceId>urn:upnp-org:serviceId:WANCommonIFC1</serviceId><SCPDURL>/WANCfg.xml</SCPDURL><controlURL>/ctl/CmnIfCfg</controlURL><eventSubURL>/evt/CmnIfCfg</eventSubURL></service></serviceList><deviceList><device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:2</deviceType><friendlyName>WANConnectionDevice</friendlyName><manufacturer>MiniUPnP</manufacturer><manufacturerURL>http://miniupnp.free.fr/</manufacturerURL><modelDescription>MiniUPnP daemon</modelDescription><modelName>MiniUPnPd</modelName><modelNumber>20221221</modelNumber><modelURL>http://miniupnp.free.fr/</modelURL><serialNumber>00000000</serialNumber><UDN>uuid:3d3cec3a-8cf0-11e0-98ee-001a6b0fdf3e</UDN><UPC>000000000000</UPC><serviceList><service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:2</serviceType><serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId><SCPDURL>/WANIPCn.xml</SCPDURL><controlURL>/ctl/IPConn</controlURL><eventSubURL>/evt/IPConn</eventSubURL></service><service><serviceType>urn:schemas-upnp-org:service:WANIPv6FirewallControl:1</serviceType><serviceId>urn:upnp-org:serviceId:WANIPv6Firewall1</serviceId><SCPDURL>/WANIP6FC.xml</SCPDURL><controlURL>/ctl/IP6FCtl</controlURL><eventSubURL>/evt/IP6FCtl</eventSubURL></service></serviceList></device></deviceList></device></deviceList><presentationURL>http://192.0.2.1/</presentationURL></device></root>'

MINIUPNPD_FAULT = ('<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle='
                   '"http://schemas.xmlsoap.org/soap/encoding/"><s:Body><s:Fault><faultcode>s:Client'
                   '</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError xmlns="urn:'
                   'schemas-upnp-org:control-1-0"><errorCode>501</errorCode><errorDescription>'
                   'ActionFailed</errorDescription></UPnPError></detail></s:Fault></s:Body>'
                   '</s:Envelope>')

MINIUPNPD_EXT = ('<?xml version="1.0"?>\r\n<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/'
                 'envelope/"><s:Body><u:GetExternalIPAddressResponse xmlns:u="urn:schemas-upnp-org:'
                 'service:WANIPConnection:1"><NewExternalIPAddress></NewExternalIPAddress>'
                 '</u:GetExternalIPAddressResponse></s:Body></s:Envelope>')

PREFIXED = ('<?xml version="1.0"?><dev:root xmlns:dev="urn:schemas-upnp-org:device-1-0">'
            '<dev:URLBase>http://192.168.1.1:49000/</dev:URLBase><dev:device><dev:serviceList>'
            '<dev:service><dev:serviceType>urn:schemas-upnp-org:service:WANPPPConnection:1'
            '</dev:serviceType><dev:controlURL>upnp/control/WANPPPConn1</dev:controlURL>'
            '</dev:service></dev:serviceList></dev:device></dev:root>')


def check(got, want, what):
    if got != want:
        raise AssertionError('%s: got %r, want %r' % (what, got, want))


def fixed():
    st, url = upnp.pick_service(MINIUPNPD_DESC)
    check(st, 'urn:schemas-upnp-org:service:WANIPConnection:2', 'miniupnpd service')
    check(upnp.join('http://192.0.2.1:5000/rootDesc.xml', url), 'http://192.0.2.1:5000/ctl/IPConn',
          'miniupnpd control')
    check(upnp.tag(MINIUPNPD_FAULT, 'errorCode'), '501', 'fault code')
    check(upnp.tag(MINIUPNPD_FAULT, 'errorDescription'), 'ActionFailed', 'fault text')
    check(upnp.tag(MINIUPNPD_EXT, 'NewExternalIPAddress'), '', 'empty external address')
    check(upnp.tag('<a><NewX/></a>', 'NewX'), '', 'empty element')
    check(upnp.tag('<a><NewX >1.2.3.4</NewX></a>', 'NewX'), '1.2.3.4', 'element with a space')
    check(upnp.tag('<a><NewXY>1</NewXY></a>', 'NewX'), None, 'longer name is not a match')
    check(upnp.tag('<a>NewX</a>', 'NewX'), None, 'text is not an element')
    check(upnp.tag('<a><b>&lt;x&amp;y&gt;</b></a>', 'b'), '<x&y>', 'unescaped')
    st, url = upnp.pick_service(PREFIXED)
    check(st, 'urn:schemas-upnp-org:service:WANPPPConnection:1', 'prefixed service')
    base = upnp.tag(PREFIXED, 'URLBase')
    check(upnp.join(base, url), 'http://192.168.1.1:49000/upnp/control/WANPPPConn1', 'URLBase')
    check(upnp.pick_service('<root><service><serviceType>urn:x</serviceType></service></root>'),
          None, 'no WAN service')
    for base, url, want in (
            ('http://h:1/a/b.xml', 'c', 'http://h:1/a/c'),
            ('http://h:1/a/b.xml', '/c', 'http://h:1/c'),
            ('http://h:1', 'c', 'http://h:1/c'),
            ('http://h:1/', 'c', 'http://h:1/c'),
            ('http://h:1/a/', 'http://k:2/z', 'http://k:2/z')):
        check(upnp.join(base, url), want, 'join %s %s' % (base, url))
    ans = b'HTTP/1.1 200 OK\r\nCache-Control: max-age=120\r\nLocation:  http://192.0.2.1:5000/rootDesc.xml \r\n\r\n'
    check(upnp.header(ans, b'location'), 'http://192.0.2.1:5000/rootDesc.xml', 'SSDP LOCATION')
    check(upnp.header(b'HTTP/1.1 200 OK\r\n\r\n', b'location'), None, 'no LOCATION')
    m = upnp.msearch('urn:schemas-upnp-org:device:InternetGatewayDevice:1')
    check(m.startswith(b'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n') and
          m.endswith(b'\r\n\r\n') and b'MAN: "ssdp:discover"' in m and b'MX: 2' in m, True, 'M-SEARCH')
    check(upnp.reason(718), 'the external port is already mapped to another device (718)', '718')
    check(upnp.reason(999, 'Odd'), 'the router answered UPnP error 999 (Odd)', 'unknown code')
    check(upnp.escape('a<b>&c'), 'a&lt;b&gt;&amp;c', 'escape')
    check(first_ipv4('{"ip": "203.0.113.9"}'), '203.0.113.9', 'echo JSON')
    check(first_ipv4('203.0.113.9\n'), '203.0.113.9', 'echo text')
    check(first_ipv4('v1.2 then 300.1.1.1 then 10.0.0.1.'), None, 'no address (trailing dot)')
    check(first_ipv4('v1.2 then 10.0.0.1 x'), '10.0.0.1', 'address after noise')
    check(param('a=1&key=xyz&b', 'key'), 'xyz', 'query param')
    check(param('keyx=1&akey=2', 'key'), None, 'no partial names')
    check(param('a=b; camkey=zz', 'camkey', ';'), 'zz', 'cookie')
    check(same('abc', 'abc'), True, 'same')
    check(same('abc', 'abd'), False, 'differs')
    check(same('abc', 'ab'), False, 'length')
    print('OK')


def generated(path):
    with open(path) as f:
        cases = json.load(f)
    out = []
    for c in cases:
        svc = upnp.pick_service(c['xml'])
        out.append([svc[0], upnp.join(c['base'], svc[1])] if svc else None)
    print(json.dumps(out))


if len(sys.argv) > 1:
    generated(sys.argv[1])
else:
    fixed()
