"""firmware/net/wifi.py addr4() and gateway() on the VM: the station address and gateway on images with and without
`WLAN.ipconfig` (1.24+ only), as /open's LAN address and the gateway check need them."""
import os
import subprocess

from testkit.paths import MICROPYTHON, ROOT

SCRIPT = '''
from firmware.net.wifi import addr4, gateway

class Old:          # MicroPython 1.21: ifconfig() only
    def ifconfig(self):
        return ('192.168.1.23', '255.255.255.0', '192.168.1.1', '192.168.1.1')

class New:          # 1.24+: ipconfig
    def ipconfig(self, key):
        return {'addr4': ('10.0.0.5', '255.0.0.0'), 'gw4': '10.0.0.1'}[key]

print(addr4(Old()), gateway(Old()), addr4(New()), gateway(New()))
'''


def test_address_and_gateway_with_and_without_ipconfig():
    r = subprocess.run([MICROPYTHON, '-c', SCRIPT], capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, MICROPYPATH='.frozen:' + ROOT))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["('192.168.1.23',", "'255.255.255.0')", '192.168.1.1',
                                "('10.0.0.5',", "'255.0.0.0')", '10.0.0.1']


LAN_ADDR = '''
import sys

class Old:
    def ifconfig(self):
        return ('192.168.1.23', '255.255.255.0', '192.168.1.1', '192.168.1.1')

class network:      # a 1.21 image's network module: WLAN has no ipconfig
    STA_IF = 0
    WLAN = lambda i: Old()

sys.modules['network'] = network
from firmware.remote.port_forward import lan_addr
print(lan_addr())
'''


def test_port_forward_lan_addr_on_an_image_without_ipconfig():
    """lan_addr() had no ifconfig() fallback: /open answered 503 'not connected' on 1.21."""
    r = subprocess.run([MICROPYTHON, '-c', LAN_ADDR], capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, MICROPYPATH=':'.join(['.frozen', ROOT, os.path.join(ROOT, 'lib')])))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "('192.168.1.23', '255.255.255.0')"
