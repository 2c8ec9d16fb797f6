"""The station interface's IPv4 address and gateway on every supported MicroPython version.

`WLAN.ipconfig` exists from 1.24 on; older images (the micropython-camera-driver ones, 1.21)
have only `ifconfig()` -> (ip, netmask, gateway, dns), deprecated since.
"""


def addr4(sta):
    """(ip, netmask) of `sta`."""
    try:
        a = sta.ipconfig('addr4')
        return a[0], a[1]
    except (AttributeError, OSError, ValueError):
        a = sta.ifconfig()
        return a[0], a[1]


def gateway(sta):
    try:
        return sta.ipconfig('gw4')
    except (AttributeError, OSError, ValueError):
        return sta.ifconfig()[2]
