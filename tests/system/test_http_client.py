"""firmware/net/http_client.py on the real VM against CPython servers on 127.0.0.1.

tools/testkit/vm/http_cases.py runs the cases and prints one JSON line each; the servers here answer
normally, in chunks, close-delimited, with garbage, with a reset, not at all, or never read.
"""
import hashlib
import http.server
import json
import os
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time

import pytest
from peers import fake_telegram as ft  # noqa: E402
from testkit.paths import ROOT

pytestmark = pytest.mark.timeout(180)
SECRET = 'SECRETPATH'


class Web(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, *a):
        pass

    def _send(self, status, body, extra=()):
        self.send_response(status)
        self.send_header('Content-Length', str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.startswith('/hello'):
            return self._send(200, b'hello ' + self.path.encode(),
                              [('X-Multi', 'a'), ('X-Multi', 'b'), ('X-Host', self.headers['Host'])])
        if self.path == '/chunked':
            self.send_response(200)
            self.send_header('Transfer-Encoding', 'chunked')
            self.end_headers()
            for part in (b'hello ', b'chunked ' * 3, b'world'):
                self.wfile.write(b'%x;ext=1\r\n%s\r\n' % (len(part), part))
            self.wfile.write(b'0\r\nX-Trailer: 1\r\n\r\n')
            return
        if self.path == '/big':
            return self._send(200, b'x' * 5000)
        if self.path == '/slow':
            time.sleep(1.5)
            return self._send(200, b'slow')
        return self._send(404, b'{"error": "not here"}')

    def do_POST(self):
        n = int(self.headers['Content-Length'])
        body = self.rfile.read(n)
        if self.path == '/sha':
            return self._send(200, ('%d %s' % (len(body), hashlib.sha256(body).hexdigest())).encode())
        return self._send(200, body, [('X-Length', self.headers['Content-Length'])])


def serve_tls(cert, key):
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Web)
    srv.daemon_threads = True
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    c.load_cert_chain(cert, key)
    srv.socket = c.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
    srv.handle_error = lambda *a: None
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def raw_server(behaviour):
    """A listening socket whose connections get `behaviour(conn)` in a thread."""
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    s.listen(8)
    conns = []

    def loop():
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            conns.append(c)
            threading.Thread(target=behaviour, args=(c,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return s, conns


def raw(c):
    data = b''
    while b'\r\n\r\n' not in data:
        d = c.recv(4096)
        if not d:
            return
        data += d
    path = data.split(b' ')[1]
    if path == b'/close':
        c.sendall(b'HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n' + b'until close ' * 10)
        c.close()
    elif path == b'/reset':
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        c.close()
    else:
        c.sendall(b'SSH-2.0-OpenSSH\r\n\r\n')
        c.close()


@pytest.fixture(scope='module')
def servers(tmp_path_factory):
    d = tmp_path_factory.mktemp('http')
    good = ft.make_ca(str(d / 'good'))
    rogue = ft.make_ca(str(d / 'rogue'), 'rogue CA')
    only = ft.make_ca(str(d / 'only'), 'other CA', hosts=('localhost',))
    web = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Web)
    web.daemon_threads = True
    threading.Thread(target=web.serve_forever, daemon=True).start()
    tls = serve_tls(good['cert'], good['key'])
    tls_only = serve_tls(only['cert'], only['key'])
    rawsrv, _ = raw_server(raw)
    silent, _ = raw_server(lambda c: None)  # reads nothing, answers nothing
    nonreader = socket.socket()
    nonreader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    nonreader.bind(('127.0.0.1', 0))
    nonreader.listen(1)  # the kernel accepts; nobody ever reads
    closed = ft.free_port()
    only_ca = str(d / 'only' / 'ca.der')
    ports = {'web': web.server_address[1], 'tls': tls.server_address[1],
             'tls_localhost_only': tls_only.server_address[1], 'raw': rawsrv.getsockname()[1],
             'silent': silent.getsockname()[1], 'nonreader': nonreader.getsockname()[1],
             'closed': closed, 'ca_pem': good['ca_pem'], 'ca_der': good['ca_der'],
             'rogue_der': rogue['ca_der'], 'only_ca': only_ca}
    yield ports
    for s in (web, tls, tls_only):
        s.shutdown()
    for s in (rawsrv, silent, nonreader):
        s.close()


def vm(ports, *cases, heapsize=None):
    env = dict(os.environ, MICROPYPATH='.frozen:' + ROOT)
    conf = os.path.join(os.path.dirname(ports['ca_pem']), '..', 'ports.json')
    with open(conf, 'w') as f:
        json.dump(ports, f)  # a file: this VM build crashes on an argv string over 255 bytes
    cmd = [ft.VM] + (['-X', 'heapsize=' + heapsize] if heapsize else []) + [
        os.path.join(ROOT, 'tools', 'testkit', 'vm', 'http_cases.py'), conf] + list(cases)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    out = {}
    for line in p.stdout.splitlines():
        if line.startswith('{'):
            r = json.loads(line)
            out[r['case']] = r
    assert set(out) == set(cases), 'VM exit %d\n%s%s' % (p.returncode, p.stdout, p.stderr)
    return out


def test_answers(servers):
    r = vm(servers, 'get', 'chunked', 'close_delimited', 'status_404', 'parts', 'https', 'https_der')
    assert r['get']['status'] == 200 and r['get']['body'] == 'hello /hello?x=1'
    assert r['get']['headers']['x-multi'] == 'a, b'  # lower-case names, repeats joined
    assert r['get']['headers']['x-host'] == '127.0.0.1:%d' % servers['web']
    assert r['chunked']['body'] == 'hello ' + 'chunked ' * 3 + 'world'
    assert r['close_delimited']['body'] == 'until close ' * 10
    assert r['status_404']['status'] == 404 and 'not here' in r['status_404']['body']  # no raise
    assert r['parts']['body'] == 'abcd\u00e9fxyz!' and r['parts']['headers']['x-length'] == '11'
    assert r['https']['status'] == 200 and r['https']['body'] == 'hello /hello'
    assert r['https_der']['body'] == 'over tls'


def test_upload_is_streamed_not_joined(servers):
    """61 KB sent in parts under a 150 KB heap, where joining them first runs out of memory
    (measured: streamed needs about 128 KB here, joined about 200 KB)."""
    r = vm(servers, 'upload_60k', heapsize='150K')['upload_60k']
    big = bytes(range(256)) * 240
    want = b'--b\r\nContent-Type: image/jpeg\r\n\r\n' + big + b'\r\n--b--\r\n'
    assert r.get('body') == '%d %s' % (len(want), hashlib.sha256(want).hexdigest()), r
    joined = vm(servers, 'upload_60k_joined', heapsize='150K')['upload_60k_joined']
    assert joined.get('error') == 'MemoryError', 'the heap is not tight enough to tell'


def test_errors_name_host_port_never_the_path(servers):
    cases = ('unknown_ca', 'default_roots', 'wrong_host', 'refused', 'receive_timeout',
             'send_timeout', 'too_big', 'too_big_chunked', 'reset', 'garbage', 'bad_url')
    r = vm(servers, *cases)
    for name in cases:
        assert 'error' in r[name], r[name]
        assert SECRET not in json.dumps(r[name]) and 'sendPhoto' not in json.dumps(r[name])
    tls = servers['tls']
    assert r['unknown_ca']['text'] == '127.0.0.1:%d: TLS: The certificate is not correctly signed by the trusted CA' % tls
    assert 'not correctly signed' in r['default_roots']['text']
    assert r['wrong_host']['error'] == 'ValueError' and 'TLS' in r['wrong_host']['text']
    assert r['refused']['errno'] == 111
    assert r['refused']['text'] == '127.0.0.1:%d: connect failed: connection refused' % servers['closed']
    assert r['receive_timeout']['errno'] == 110 and 'receive timed out' in r['receive_timeout']['text']
    assert r['receive_timeout']['ms'] < 10000
    assert r['send_timeout']['errno'] == 110 and 'send timed out' in r['send_timeout']['text']
    assert 'larger than' in r['too_big']['text'] or 'limit' in r['too_big']['text']
    assert 'larger than' in r['too_big_chunked']['text']
    assert r['reset']['error'] == 'OSError' and str(servers['raw']) in r['reset']['text']
    assert r['garbage']['error'] == 'ValueError' and 'not an HTTP response' in r['garbage']['text']
    assert r['bad_url']['error'] == 'ValueError'


def test_dns_is_cached_and_forgotten_after_failure(servers):
    r = vm(servers, 'dns_cache')['dns_cache']
    assert r['lookups_for_3'] == 1
    assert r['lookups_after_failures'] == 2


def test_requests_do_not_block_each_other(servers):
    r = vm(servers, 'concurrent')['concurrent']
    assert r['statuses'] == [200, 200, 200]
    assert r['ms'] < 4000  # three 1.5 s answers in parallel, not 4.5 s in a row


def test_tls_among_many_sockets(servers):
    """Regression: asyncio used to wait on the TLS object itself; this VM's select.poll then
    corrupts that entry when its fd array grows, and the VM died with SIGSEGV."""
    r = vm(servers, 'tls_among_many_sockets')['tls_among_many_sockets']
    assert r.get('statuses') == [200] * 4, r
