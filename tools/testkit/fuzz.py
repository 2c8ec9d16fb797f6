"""The fuzzer shared by tests/system/test_fuzz.py and bench/bench_fuzz.py: hypothesis strategies for
LFCP datagrams and HTTP requests, the client side, and the survival checks."""
import argparse
import base64
import json
import os
import socket
import sys
import tempfile
import time
import urllib.parse

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from firmware.lfcp import codec as lfcp  # noqa: E402
from testkit.helpers import free_port  # noqa: E402
from testkit.paths import ROOT  # noqa: E402

KEY = 'fuzz-key-0123456789abcdef'
NAME = 'fuzzcam'
ADMIN = ('admin', 'fuzz-admin-pw')
SAFE_CMDS = ('ENAL', 'DSAL', 'WCAM', 'SCAM', 'STAT', 'TLGS', 'TLGC', 'UPOP', 'UPCL')
OTHER_TYPES = ('ACK', 'ERR', 'LOG', 'MOAL', 'HEARTBEAT', 'RST', 'DSLP')  # RST/DSLP: bad MAC only
ACTIONS = ('camera_off', 'camera_on', 'arm', 'disarm', 'photo', 'alarm_test', 'telegram_set',
           'open', 'close')
DANGEROUS = ('reboot', 'sleep')
PATHS = {
    'control': ('/', '/status', '/control', '/capture', '/ports', '/favicon.ico', '/index.html'),
    'stream': ('/', '/stream', '/capture', '/status'),
    'admin': ('/', '/status', '/action/', '/action/reboot', '/action/sleep')
    + tuple('/action/' + a for a in ACTIONS),
}
VARS = ('framesize', 'quality', 'brightness', 'contrast', 'saturation', 'special_effect',
        'wb_mode', 'vflip', 'hmirror', 'awb', 'aec_value', 'led_intensity', 'nope', '')
REJECTS = ('oversized', 'fields', 'malformed', 'bad_mac', 'name', 'unknown', 'replay', 'plain')


# --- LFCP inputs --------------------------------------------------------------------------------

def _mac(key, body):
    return key.hexdigest(body, lfcp.DOWN)


class Seqs:
    """Direct seqs as a LAN tool makes them: milliseconds since 1970, strictly increasing."""

    def __init__(self):
        self.last = int(time.time() * 1000)
        self.used = []

    def fresh(self):
        self.last += 1
        self.used.append(self.last)
        if len(self.used) > 64:
            self.used.pop(0)
        return self.last


def lfcp_strategy(seqs, key):
    """Datagrams: (label, bytes). Labels name what was aimed at, for the table."""
    printable = st.characters(min_codepoint=32, max_codepoint=126)
    wild = st.one_of(printable, st.sampled_from('\x00\n\r\t\x7f\x80\xff,'))
    field = st.one_of(st.sampled_from(('0', '1', NAME, 'cam1', 'ENAL', 'TLGC', '123:abc')),
                      st.text(printable.filter(lambda c: c != ','), max_size=70))
    types = st.one_of(st.sampled_from(SAFE_CMDS + OTHER_TYPES), st.text(printable, max_size=10))

    binary = st.binary(max_size=300).map(lambda b: ('binary', b))
    csvish = st.lists(st.text(wild, max_size=40), max_size=14).map(
        lambda f: ('csv', ','.join(f).encode('latin-1')))

    @st.composite
    def plain(draw):
        f = [draw(st.sampled_from((NAME, 'cam1', ''))), draw(types)] + \
            [draw(field) for _ in range(draw(st.sampled_from((6, 6, 5, 7, 0, 20))))]
        return 'plain', ','.join(f).encode()

    @st.composite
    def authed(draw):
        """Valid MAC over generated fields: what only a key holder can send, so it reaches the
        command parser. RST and DSLP never get a valid MAC (they would end the run)."""
        typ = draw(types)
        if typ in DANGEROUS or typ in ('RST', 'DSLP'):
            typ = 'STAT'
        name = draw(st.sampled_from((NAME, NAME, NAME, 'other')))
        n = draw(st.sampled_from((6, 6, 6, 5, 7)))
        params = [draw(field) for _ in range(n)]
        if typ == 'TLGC' and params and draw(st.booleans()):
            params[0] = draw(st.sampled_from(('0', 'x:y', '1:' + 'a' * 30, '12345:')))
        how = draw(st.sampled_from(('fresh', 'fresh', 'replay', 'stale', 'badseq')))
        seq = {'fresh': lambda: seqs.fresh(),
               'replay': lambda: seqs.used[0] if seqs.used else 7,
               'stale': lambda: draw(st.integers(0, 1000)),
               'badseq': lambda: draw(st.sampled_from(('', '-1', '1e3', 'x', '9' * 25)))}[how]()
        body = ','.join([name, typ] + params + [str(seq)]).encode('ascii', 'replace')
        return 'auth-' + how, body + b',' + _mac(key, body)

    @st.composite
    def mutated(draw):
        """A correct datagram, then broken one way."""
        typ = draw(st.sampled_from(SAFE_CMDS + ('RST', 'DSLP')))
        good = lfcp.encode(NAME, typ, (), seqs.fresh(), key, lfcp.DOWN)
        how = draw(st.sampled_from(('truncate', 'flip_mac', 'pad', 'comma', 'byte', 'nomac',
                                    'plain_cut')))
        if how == 'truncate':
            data = good[:draw(st.integers(0, len(good) - 1))]
        elif how == 'flip_mac':
            i = draw(st.integers(len(good) - 64, len(good) - 1))
            c = good[i:i + 1]
            data = good[:i] + (b'0' if c != b'0' else b'1') + good[i + 1:]
        elif how == 'pad':
            data = good + b'x' * draw(st.integers(1, 400))
        elif how == 'comma':
            i = draw(st.integers(0, len(good)))
            data = good[:i] + b',' + good[i:]
        elif how == 'byte':
            i = draw(st.integers(0, len(good) - 1))
            b = (good[i] + draw(st.integers(1, 255))) % 256  # never the same byte
            data = good[:i] + bytes([b]) + good[i + 1:]
        elif how == 'nomac':
            data = good.rsplit(b',', 1)[0]
        else:
            data = b','.join(good.split(b',')[:8])
        return 'mutated-' + how, data

    return st.one_of(binary, csvish, plain(), authed(), mutated())


def corpus(seqs, key):
    """One datagram aimed at each reject counter, sent before the generated ones."""
    good = lfcp.encode(NAME, 'ENAL', (), seqs.fresh(), key, lfcp.DOWN)
    flip = good[:-1] + (b'0' if good[-1:] != b'0' else b'1')
    return [('oversized', b'x' * 300), ('fields', b'a,b,c'),
            ('malformed', NAME.encode() + b',ENAL,\x01,0,0,0,0,0'), ('bad_mac', flip),
            ('name', lfcp.encode('other', 'ENAL', (), seqs.fresh(), key, lfcp.DOWN)),
            ('unknown', lfcp.encode(NAME, 'FOO', (), seqs.fresh(), key, lfcp.DOWN)),
            ('replay', lfcp.encode(NAME, 'STAT', (), 5, key, lfcp.DOWN)),
            ('plain', NAME.encode() + b',ENAL,0,0,0,0,0,0')]


# --- HTTP inputs --------------------------------------------------------------------------------

def _auth(user, pw):
    return 'Basic ' + base64.b64encode(('%s:%s' % (user, pw)).encode()).decode()


def http_strategy(kind):
    """Raw requests for one server: (label, bytes, authorised)."""
    token = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12)
    methods = st.one_of(st.sampled_from(('GET', 'GET', 'POST', 'POST', 'HEAD', 'PUT', 'DELETE',
                                         'OPTIONS', 'PATCH', 'get')), token)
    seg = st.one_of(st.sampled_from(('..', '.', '%00', '%2e%2e', '%ff', '%', '~', 'a' * 300)),
                    st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF), max_size=12).map(
                        lambda s: urllib.parse.quote(s, safe='/%')))
    known = st.sampled_from(PATHS[kind])
    path = st.one_of(known, known, st.lists(seg, max_size=4).map(lambda s: '/' + '/'.join(s)))
    val = st.one_of(st.integers(-10 ** 6, 10 ** 6).map(str),
                    st.text(st.characters(min_codepoint=32, max_codepoint=0x3FF), max_size=10))
    pair = st.tuples(st.one_of(st.sampled_from(('var', 'val', 'action', 'x')), token), val)
    query = st.one_of(
        st.just(''),
        st.tuples(st.sampled_from(VARS), val).map(lambda p: 'var=%s&val=%s' % (
            p[0], urllib.parse.quote(p[1]))),
        st.sampled_from(('action=stream', 'action=snapshot', 'action=x', 'action', '&&', '=',
                         'var=quality', 'val=3', '%zz=1')),
        st.lists(pair, max_size=4).map(urllib.parse.urlencode))
    header = st.one_of(
        st.tuples(st.sampled_from(('Content-Type', 'Content-Length', 'Origin', 'Host', 'Cookie',
                                   'Transfer-Encoding', 'Connection', 'Authorization', 'X-A')),
                  st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)),
        st.tuples(token, st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=40)),
        st.tuples(st.just('Content-Type'), st.sampled_from((
            'application/json', 'application/x-www-form-urlencoded', 'multipart/form-data',
            'multipart/form-data; boundary=x', 'text/plain'))),
        st.tuples(st.just('Content-Length'), st.sampled_from(('0', '-1', '5', '4096', '4097',
                                                               '99999999999', 'x', ''))),
        st.tuples(st.just('Authorization'), st.sampled_from((
            'Basic', 'Basic !!!', 'Basic ' + base64.b64encode(b'admin').decode(),
            _auth(ADMIN[0], 'wrong'), 'Bearer x', _auth('', '')))),
        st.tuples(st.just('X-Long'), st.just('v' * 1500)))
    body = st.one_of(
        st.just(b''), st.binary(max_size=600),
        st.sampled_from((b'{}', b'[]', b'{"seconds": "x"}', b'{"reason": "test"}', b'null',
                         b'{"token": "1:2", "chat_id": "x"}', b'seconds=-1', b'a=1&a=2', b'%zz',
                         b'{' * 200, b'x' * 5000)),
        st.dictionaries(st.text(max_size=8), st.one_of(st.integers(), st.text(max_size=20),
                                                       st.none()), max_size=4).map(
            lambda d: json.dumps(d).encode()))

    @st.composite
    def request(draw):
        m = draw(methods)
        p = draw(path)
        q = draw(query)
        target = p + ('?' + q if q else '')
        version = draw(st.sampled_from(('HTTP/1.1', 'HTTP/1.1', 'HTTP/1.0', 'HTTP/9', '')))
        hs = draw(st.lists(header, max_size=6))
        authorised = kind == 'admin' and draw(st.booleans())
        if authorised:
            hs.append(('Authorization', _auth(*ADMIN)))
        b = draw(body)
        if b and draw(st.booleans()):
            hs.append(('Content-Length', str(len(b))))
        if draw(st.integers(0, 30)) == 0:
            hs = hs * 40  # many headers
        if authorised and _dangerous(m, p, hs):
            hs = [h for h in hs if h[0].lower() != 'authorization']
            authorised = False
        line = ('%s %s %s' % (m, target, version)).rstrip()
        head = line + '\r\n' + ''.join('%s: %s\r\n' % h for h in hs) + '\r\n'
        return 'request', head.encode('utf-8', 'replace') + b, authorised

    raw = st.one_of(
        st.binary(max_size=2000),
        st.sampled_from((b'\r\n\r\n', b'GET\r\n\r\n', b'GET /\r\n\r\n', b'GET / HTTP/1.1\n\n',
                         b'GET ' + b'/a' * 900 + b' HTTP/1.1\r\n\r\n', b' / HTTP/1.1\r\n\r\n',
                         b'GET / HTTP/1.1\r\nHost\r\n\r\n', b'GET / HTTP/1.1\r\n: x\r\n\r\n',
                         b'POST /action/arm HTTP/1.1\r\nContent-Length: 10\r\n\r\nab',
                         b'GET / HTTP/1.1\r\n' + b'A: b\r\n' * 300 + b'\r\n',
                         b'GET /\x00 HTTP/1.1\r\n\r\n', b'\xff\xfe\xfd HTTP/1.1\r\n\r\n')),
        st.text(max_size=200).map(lambda s: s.encode('utf-8')),
    ).map(lambda b: ('raw', b, False))
    return st.one_of(request(), request(), request(), raw)


def _dangerous(method, path, headers):
    """Would this authorised request reboot or put the board to sleep?"""
    p = urllib.parse.unquote(path).lower()
    return any(d in p for d in DANGEROUS) and (method.upper() == 'POST' or 'post' in method.lower())


# --- the client side ----------------------------------------------------------------------------

def http_exchange(port, data, timeout=10.0, host='127.0.0.1'):
    """Send raw bytes, half-close, read the answer: (status int | 'closed' | 'timeout', body)."""
    try:
        s = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        return 'refused', str(e).encode()
    try:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may answer and close before it read everything
        buf = b''
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                return 'timeout', buf
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            if b'\r\n\r\n' in buf:
                head = buf.split(b'\r\n\r\n', 1)[0].lower()
                if b'multipart/x-mixed-replace' in head or len(buf) > 1 << 20:
                    break  # a stream never ends: its status is enough
        else:
            return 'timeout', buf
    finally:
        s.close()
    if not buf:
        return 'closed', b''
    try:
        code = int(buf.split(b'\r\n', 1)[0].split(b' ')[1])
    except (IndexError, ValueError):
        return 'garbled', buf
    return code, buf.split(b'\r\n\r\n', 1)[-1]


def documented_5xx(kind, data, code, body):
    """5xx the firmware documents: CameraWebServer's 500 for an unknown /control var, 503 when the
    camera is off or has no frame, when a stream is full, when an admin action cannot be done."""
    if code == 500:
        return kind == 'control' and body.startswith(b'unknown var')
    if code == 503:
        if body.startswith(b'internal error'):
            return False
        line = data.split(b'\r\n', 1)[0]
        if kind == 'admin':
            return b'/action/' in line
        return b'capture' in line or b'stream' in line or b'snapshot' in line
    return False


class Fuzzer:
    """Runs the fuzzers against one running firmware and keeps the tallies."""

    def __init__(self, ports, lfcp_port, admin=ADMIN, key=KEY, host='127.0.0.1', seed=None):
        self.host = host
        self.ports = ports  # {'control': p, 'stream': p, 'admin': p}
        self.lfcp_port = lfcp_port
        self.admin_auth = admin
        self.key = lfcp.Hmac(key)
        self.seqs = Seqs()
        self.seed = seed
        self.tally = {}  # target -> {'inputs', 'by_outcome': {}, 'bad': [...]}
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.udp.bind((host, 0))
        self.udp.setblocking(False)
        self.answers = {}

    def close(self):
        self.udp.close()

    def _t(self, target):
        return self.tally.setdefault(target, {'inputs': 0, 'outcomes': {}, 'bad': []})

    def _settings(self, n):
        kw = dict(max_examples=n, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck), derandomize=self.seed is not None)
        return settings(**kw)

    # LFCP -----------------------------------------------------------------------------------
    def lfcp(self, n, pace_every=50):
        t = self._t('lfcp')
        sent = [0]
        for label, data in corpus(self.seqs, self.key):
            self.udp.sendto(data, (self.host, self.lfcp_port))
            t['inputs'] += 1
            t['outcomes']['corpus'] = t['outcomes'].get('corpus', 0) + 1

        @self._settings(n)
        @given(lfcp_strategy(self.seqs, self.key))
        def one(item):
            label, data = item
            try:
                self.udp.sendto(data, (self.host, self.lfcp_port))
            except OSError as e:
                t['bad'].append('send failed: %r' % e)
                return
            t['inputs'] += 1
            t['outcomes'][label] = t['outcomes'].get(label, 0) + 1
            sent[0] += 1
            if sent[0] % pace_every == 0:
                self.drain()
                time.sleep(0.02)  # the device reads 16 datagrams per turn of its loop
        one()
        time.sleep(0.3)
        self.drain()
        return t

    def drain(self):
        """Count the device's answers to direct commands (ACK, ERR, STAT)."""
        while True:
            try:
                data, _ = self.udp.recvfrom(1024)
            except OSError:
                return
            try:
                f, _ = lfcp.decode(data, self.key)
                k = f[1] + ('-' + f[2] if f[1] == 'ERR' else '')
            except lfcp.LfcpError as e:
                k = 'undecodable-' + e.kind
            self.answers[k] = self.answers.get(k, 0) + 1

    # HTTP -----------------------------------------------------------------------------------
    def http(self, kind, n):
        t = self._t(kind)
        port = self.ports[kind]

        @self._settings(n)
        @given(http_strategy(kind))
        def one(item):
            label, data, authorised = item
            code, body = http_exchange(port, data, host=self.host)
            t['inputs'] += 1
            key = str(code) if not isinstance(code, int) else '%dxx' % (code // 100)
            if kind == 'admin' and isinstance(code, int) and authorised and code != 401:
                key += '+auth'
            t['outcomes'][key] = t['outcomes'].get(key, 0) + 1
            if code in ('timeout', 'refused', 'garbled') or (
                    isinstance(code, int) and code >= 500
                    and not documented_5xx(kind, data, code, body)):
                t['bad'].append((code, data[:200], body[:200]))
            elif (kind == 'admin' and not authorised and isinstance(code, int)
                  and code < 300 and not data[:8].upper().startswith(b'OPTIONS ')):
                t['bad'].append(('admin answered without credentials', code, data[:200],
                                 body[:200]))  # OPTIONS: microdot's Allow list, no data
        one()
        return t

    # the checks after a run -----------------------------------------------------------------
    def get(self, kind, path, auth=None):
        h = 'GET %s HTTP/1.1\r\nHost: x\r\n' % path
        if auth:
            h += 'Authorization: %s\r\n' % _auth(*auth)
        return http_exchange(self.ports[kind], (h + '\r\n').encode(), host=self.host)

    def status(self):
        code, body = self.get('admin', '/status', self.admin_auth)
        if code != 200:
            raise AssertionError('admin /status answered %r: %r' % (code, body[:200]))
        return json.loads(body)

    def post(self, action):
        data = ('POST /action/%s HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n'
                'Content-Length: 0\r\n\r\n' % (action, _auth(*self.admin_auth))).encode()
        return http_exchange(self.ports['admin'], data, host=self.host)

    def viewer_frame(self, timeout=10.0):
        """'frame' when a plain GET /stream delivers the first JPEG part, else what it got."""
        try:
            s = socket.create_connection((self.host, self.ports['stream']), timeout=timeout)
        except OSError as e:
            return 'refused: %s' % e
        try:
            s.sendall(b'GET /stream HTTP/1.1\r\nHost: x\r\n\r\n')
            buf = b''
            end = time.monotonic() + timeout
            while time.monotonic() < end and len(buf) < 1 << 20:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
                if b'\xff\xd8' in buf.split(b'\r\n\r\n', 1)[-1]:
                    return 'frame'
            return buf[:120]
        except OSError as e:
            return repr(e)
        finally:
            s.close()

    def direct_stat(self, tries=5):
        """A fresh, authenticated STAT straight to the device: its STAT answer, or None."""
        for _ in range(tries):
            self.drain()
            cid = str(self.seqs.fresh())
            self.udp.sendto(lfcp.encode(NAME, 'STAT', ('0',) * 5 + (cid,), self.seqs.fresh(),
                                        self.key, lfcp.DOWN), (self.host, self.lfcp_port))
            end = time.monotonic() + 3
            while time.monotonic() < end:
                try:
                    data, _ = self.udp.recvfrom(1024)
                    f, _ = lfcp.decode(data, self.key)
                except (OSError, lfcp.LfcpError):
                    time.sleep(0.02)
                    continue
                if f[1] == 'STAT' and f[7] == cid:
                    return f[2]
        return None

    def survived(self, fd_before=None, pid=None, fds=None):
        """Every check after the run: a list of failures (empty = all good) and the figures."""
        fails = []
        figures = {}
        self.post('camera_on')  # SCAM/camera_off may have been fuzzed: the camera is needed below
        st = self.status()
        dead = dict((n, t) for n, t in st['tasks'].items() if t['restarts'] or not t['running'])
        if dead:
            fails.append('tasks restarted or stopped: %r' % dead)
        if st['supervisor']['tracebacks']:
            fails.append('supervisor tracebacks: %r' % st['supervisor']['tracebacks'])
        figures['rejected'] = st['lfcp']['rejected']
        figures['lfcp_stats'] = st['lfcp']['stats']
        figures['heap_free'] = st['heap_free']
        for kind, path in (('control', '/status'), ('stream', '/?action=snapshot'),
                           ('control', '/capture'), ('admin', '/')):
            ok = False
            for _ in range(20):  # the camera may be coming back on
                code, body = self.get(kind, path, self.admin_auth if kind == 'admin' else None)
                if code == 200:
                    ok = True
                    break
                time.sleep(0.5)
            figures['%s %s' % (kind, path)] = code
            if not ok:
                fails.append('%s %s answers %r after the run' % (kind, path, code))
        frame = self.viewer_frame()
        figures['stream viewer'] = frame
        if frame != 'frame':
            fails.append('a viewer gets no stream after the run: %s' % frame)
        for _ in range(50):  # the fuzz's viewers are gone: their slots must be free again
            viewers = self.status()['stream']['viewers']
            if viewers == 0:
                break
            time.sleep(0.2)
        figures['viewers left'] = viewers
        if viewers:
            fails.append('%d stream viewer slots still taken after the run' % viewers)
        stat = self.direct_stat()
        figures['lfcp STAT'] = stat
        if not stat:
            fails.append('no STAT answer over LFCP after the run')
        if fds is not None and fd_before is not None:
            after = fds()
            for _ in range(50):  # connections still closing
                if after is None or after <= fd_before + 2:
                    break
                time.sleep(0.2)
                after = fds()
            figures['fds'] = (fd_before, after)
            if after is None or after > fd_before + 2:
                fails.append('open descriptors grew: %s -> %s' % (fd_before, after))
        return fails, figures


def fd_count(pid):
    try:
        return len(os.listdir('/proc/%d/fd' % pid))
    except (OSError, TypeError):
        return None


def config(lfcp_port, ports, servers=(), extra=None):
    """The firmware config the fuzz runs use (bench and test)."""
    c = {
        'device': {'name': NAME},
        'http': dict(bind='127.0.0.1', **ports),
        'admin': {'user': ADMIN[0], 'password': ADMIN[1]},
        'camera': {'framesize': 'QVGA'},
        'wifi': {'ap_password': 'fuzz-ap-pass', 'upstream': [{'ssid': 'home',
                                                              'password': 'home-pass-1'}]},
        'internet': {'probe': []},
        'lfcp': {'key': KEY, 'port': lfcp_port, 'heartbeat_s': 2, 'unreachable_after_s': 10,
                 'rate_limit': 10000, 'servers': list(servers)},
        # no DNS on this machine's loopback runs: a closed local port instead of api.telegram.org
        'telegram': {'api_url': 'https://127.0.0.1:%d' % free_port(socket.SOCK_STREAM)},
        'upnp': {'ssdp': '127.0.0.1:%d' % free_port(socket.SOCK_DGRAM)},
        'alarm': {'auto_arm': False},
    }
    for k, v in (extra or {}).items():
        c.setdefault(k, {}).update(v)
    return c


