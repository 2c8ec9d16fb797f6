"""The station interface's addresses, on every MicroPython the firmware supports.

WLAN.ipconfig() exists from MicroPython 1.24; older images (the camera-driver builds among them)
have only ifconfig(). Both give the same answers here.
"""


def _ip4(text):
    try:
        p = [int(x) for x in text.split('.')]
    except (ValueError, AttributeError):
        return None
    if len(p) != 4 or min(p) < 0 or max(p) > 255:
        return None
    return (p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]


def _mask(prefix):
    bits = (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF if prefix else 0
    return '%d.%d.%d.%d' % (bits >> 24, (bits >> 16) & 255, (bits >> 8) & 255, bits & 255)


def lan(wlan):
    """(ip, netmask) of `wlan`, ('0.0.0.0', '0.0.0.0') when it has none."""
    try:
        if hasattr(wlan, 'ipconfig'):
            a = wlan.ipconfig('addr4')
            mask = a[1]
            if isinstance(mask, int):  # some ports give the prefix length
                mask = _mask(mask)
            return a[0], mask
        c = wlan.ifconfig()
        return c[0], c[1]
    except Exception:
        return '0.0.0.0', '0.0.0.0'


def gateway(wlan):
    try:
        if hasattr(wlan, 'ipconfig'):
            return wlan.ipconfig('gw4')
        return wlan.ifconfig()[2]
    except Exception:
        return None


def same_lan(peer, ip, mask):
    """True if `peer` is on the subnet of (ip, mask)."""
    a, b, m = _ip4(peer), _ip4(ip), _ip4(mask)
    return a is not None and bool(b) and bool(m) and (a & m) == (b & m)
