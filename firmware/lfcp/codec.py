"""LFCP codec: the 8-field CSV datagram of the original, plus an authenticated form.

    plain:  name,TYPE,p2,p3,p4,p5,p6,p7            at most 128 bytes
    auth:   name,TYPE,p2,p3,p4,p5,p6,p7,seq,mac    at most 224 bytes

mac is the lowercase hex HMAC-SHA256 under the shared key of the direction tag (UP "lfcp-up|" for
device -> server, DOWN "lfcp-down|" for server -> device) followed by everything before ",mac":
a datagram reflected back to its sender never verifies, and field 0 names the device. The
plain part keeps the original limits, so a plain peer's parser never sees a longer field list
than it would in legacy mode. Runs unchanged on MicroPython and CPython; docs/protocol.md is
the specification.
"""
import binascii
import hashlib

from firmware.core.commands import LFCP, TABLE
from firmware.core.secret import same_bytes

try:
    import hmac as _hmac  # CPython: the C implementation, for the reference server's throughput
except ImportError:
    _hmac = None

MAX_PLAIN = 128
MAX_AUTH = 224
MAX_FIELD = 64
MAX_SEQ_DIGITS = 19
UP = b'lfcp-up|'  # device -> server (reports, ACK/ERR/STAT of commands)
DOWN = b'lfcp-down|'  # server or LAN tool -> device (commands, ACKs)

# Server -> device: commands (and the ACK that answers a device message).
COMMANDS = tuple(c[LFCP] for c in TABLE if c[LFCP])
# Device -> server.
REPORTS = ('HEARTBEAT', 'ACK', 'ERR', 'LOG', 'MOAL', 'STAT')


class LfcpError(Exception):
    """A refused datagram. kind names the reject counter; auth tells whether the sender proved
    the key (only then is it worth an ERR); fields/seq are kept when they could be parsed."""

    def __init__(self, kind, auth=False, fields=None, seq=None):
        super().__init__(kind)
        self.kind = kind
        self.auth = auth
        self.fields = fields
        self.seq = seq


class Hmac:
    """HMAC-SHA256 with the padded key prepared once (MicroPython's hashlib has no copy())."""

    def __init__(self, key):
        if isinstance(key, str):
            key = key.encode()
        self._key = key
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        key = key + bytes(64 - len(key))
        self._i = bytes(b ^ 0x36 for b in key)
        self._o = bytes(b ^ 0x5C for b in key)

    def hexdigest(self, msg, way=UP):
        if _hmac:
            return _hmac.new(self._key, way + msg, 'sha256').hexdigest().encode()
        h = hashlib.sha256(self._i)
        h.update(way)
        h.update(msg)
        inner = h.digest()
        h = hashlib.sha256(self._o)
        h.update(inner)
        return binascii.hexlify(h.digest())

    def check(self, msg, mac, way=UP):
        return same_bytes(self.hexdigest(msg, way), mac)


def clean(value):
    """A parameter as a safe field: str, printable ASCII, no comma, at most 64 bytes, '0' if empty."""
    s = str(value)
    out = []
    for c in s:
        o = ord(c)
        if c == ',':
            out.append(';')
        elif c == ' ':
            out.append('_')
        elif 32 < o < 127:
            out.append(c)
    s = ''.join(out)[:MAX_FIELD]
    return s if s else '0'


def encode(name, typ, params=(), seq=None, key=None, way=UP):
    """One datagram as bytes. Plain when key is None, else with seq and mac (bound to way)."""
    f = [name, typ]
    for p in params:
        f.append(clean(p))
    if len(f) > 8:
        raise ValueError('at most 6 parameters')
    while len(f) < 8:
        f.append('0')
    body = ','.join(f)
    if len(body) > MAX_PLAIN:
        raise ValueError('message longer than %d bytes' % MAX_PLAIN)
    if key is None:
        return body.encode()
    body = ('%s,%d' % (body, seq)).encode()
    return body + b',' + key.hexdigest(body, way)


def _printable(data):
    for b in data:
        if b < 32 or b > 126:
            return False
    return True


def decode(data, key=None, way=UP):
    """Parse one datagram sent in direction way; return (fields, seq), seq None when plain.

    Raises LfcpError('oversized' | 'malformed' | 'fields' | 'bad_mac'). Checks framing and the
    MAC only: the device name, the type and the freshness of seq are the caller's business.
    """
    n = len(data)
    if n > MAX_AUTH:
        raise LfcpError('oversized')
    if n and data[n - 1] == 10:  # a trailing newline (netcat, echo) is tolerated
        n -= 2 if n > 1 and data[n - 2] == 13 else 1
        data = data[:n]
    if not _printable(data):
        raise LfcpError('malformed')
    f = data.decode().split(',')
    if len(f) == 8:
        if n > MAX_PLAIN:
            raise LfcpError('oversized')
        seq = None
    elif len(f) == 10:
        cut = n - len(f[9]) - 1
        if key is None or not key.check(data[:cut], f[9].encode(), way):
            raise LfcpError('bad_mac')
        s = f[8]
        if not s or len(s) > MAX_SEQ_DIGITS or not s.isdigit():
            raise LfcpError('malformed', True, f)
        seq = int(s)
        f = f[:8]
        if cut - len(s) - 1 > MAX_PLAIN:
            raise LfcpError('oversized', True, f, seq)
    else:
        raise LfcpError('fields')
    for x in f:
        if len(x) > MAX_FIELD:
            raise LfcpError('malformed', seq is not None, f, seq)
    return f, seq
