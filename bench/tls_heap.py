"""GC heap one verified TLS connection takes on the unix VM (mbedTLS allocates its buffers from the
MicroPython heap there; on the ESP32 they come from the IDF heap, outside the GC heap).

A TLS server on 127.0.0.1 with a test CA (tools/peers/fake_telegram.make_ca); the VM verifies it
with the firmware's http_client.tls_context and reports gc.mem_alloc() after a collect at each
step. Prints a table; never asserts.

    PYTHONPATH=.:tools .venv/bin/python bench/tls_heap.py
"""
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

from peers import fake_telegram as ft  # noqa: E402
from testkit.paths import MICROPYTHON  # noqa: E402

VM = '''
import gc, json, micropython, socket, ssl, sys
from firmware.net import http_client
ca, port = sys.argv[1], int(sys.argv[2])
out = []
def step(name, ok=True):
    gc.collect()
    out.append((name, gc.mem_alloc() if ok else None, micropython.mem_peak()))
step('start')
with open(ca, 'rb') as f:
    der = f.read()
ctx = http_client.tls_context(der)
step('context with the CA')
s = socket.socket()
s.connect(socket.getaddrinfo('127.0.0.1', port)[0][-1])
step('TCP connected')
t = ctx.wrap_socket(s, server_hostname='127.0.0.1')
step('TLS handshake done')
t.write(b'ping')
step('one record each way', t.read(4) == b'pong')
t.close()
step('closed')
print(json.dumps(out))
'''


def serve(pki, lsock):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki['cert'], pki['key'])
    c, _ = lsock.accept()
    with ctx.wrap_socket(c, server_side=True) as t:
        if t.recv(4) == b'ping':
            t.sendall(b'pong')
        try:
            t.recv(1)
        except OSError:
            pass


def main():
    d = tempfile.mkdtemp()
    pki = ft.make_ca(os.path.join(d, 'pki'))
    lsock = socket.socket()
    lsock.bind(('127.0.0.1', 0))
    lsock.listen(1)
    th = threading.Thread(target=serve, args=(pki, lsock), daemon=True)
    th.start()
    r = subprocess.run([MICROPYTHON, '-X', 'heapsize=2M', '-c', VM, pki['ca_der'],
                        str(lsock.getsockname()[1])], capture_output=True, text=True, timeout=60,
                       cwd=ROOT, env=dict(os.environ, MICROPYPATH='.frozen:' + ROOT))
    if r.returncode:
        print(r.stdout, r.stderr)
        return 1
    steps = json.loads(r.stdout)
    base = steps[0][1]
    print('GC heap of one verified TLS client connection on the unix VM (bytes; in use after a '
          'collect, and the peak so far)')
    print('  %-24s %10s %10s %12s' % ('step', 'in use', 'vs start', 'peak so far'))
    for name, used, peak in steps:
        print('  %-24s %10s %10s %12d' % (name, used, '' if used is None else '%+d' % (used - base), peak))
    return 0


if __name__ == '__main__':
    sys.exit(main())
