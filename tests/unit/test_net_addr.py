"""firmware/net/addresses.py on the VM: the station address and gateway on images with and
without `WLAN.ipconfig` (1.24+ only), as /open's LAN address and the gateway check need them.
(The port forward used ipconfig() alone: /open answered 503 'not connected' on a 1.21 image.)"""
import os
import subprocess

from testkit.paths import MICROPYTHON, ROOT

SCRIPT = '''
from firmware.net.addresses import gateway, lan, same_lan

class Old:          # MicroPython 1.21: ifconfig() only
    def ifconfig(self):
        return ('192.168.1.23', '255.255.255.0', '192.168.1.1', '192.168.1.1')

class New:          # 1.24+: ipconfig
    def ipconfig(self, key):
        return {'addr4': ('10.0.0.5', '255.0.0.0'), 'gw4': '10.0.0.1'}[key]

class Prefix:       # ports that give the prefix length
    def ipconfig(self, key):
        return {'addr4': ('10.0.0.5', 24), 'gw4': '10.0.0.1'}[key]

print(lan(Old()), gateway(Old()), lan(New()), gateway(New()), lan(Prefix()),
      same_lan('192.168.1.99', *lan(Old())), same_lan('192.168.2.1', *lan(Old())))
'''


def test_address_and_gateway_with_and_without_ipconfig():
    r = subprocess.run([MICROPYTHON, '-c', SCRIPT], capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, MICROPYPATH='.frozen:' + ROOT))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["('192.168.1.23',", "'255.255.255.0')", '192.168.1.1',
                                "('10.0.0.5',", "'255.0.0.0')", '10.0.0.1',
                                "('10.0.0.5',", "'255.255.255.0')", 'True', 'False']
