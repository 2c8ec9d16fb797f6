"""A fake Telegram Bot API over HTTPS on 127.0.0.1, for tests, the benchmark and `make sim`.

It behaves like api.telegram.org where the firmware can tell: /bot<TOKEN>/<method>, JSON answers
{"ok": ...}, multipart uploads (parsed with the email package, the JPEG checked with Pillow),
getUpdates long polling with offsets that confirm updates. Tests script it: add updates, inject
faults (429 with retry_after, 502, a reset, a hang, a slow answer) and read what arrived.

    python tools/peers/fake_telegram.py --dir /tmp/ftg --token 123:ABC... --port 8443
"""
import argparse
import datetime
import email.parser
import email.policy
import http.server
import io
import ipaddress
import json
import os
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.parse

# --- a test CA (cryptography) ------------------------------------------------------------------


def make_ca(directory, name='fake telegram test CA', hosts=('127.0.0.1', 'localhost')):
    """Write ca.pem/ca.der and a server cert/key for `hosts` signed by it; return the paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    os.makedirs(directory, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    day = datetime.timedelta(days=1)

    def dn(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(dn(name)).issuer_name(dn(name))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - day).not_valid_after(now + 30 * day)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                         critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    cert = (x509.CertificateBuilder().subject_name(dn(hosts[0])).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - day).not_valid_after(now + 30 * day)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {k: os.path.join(directory, f) for k, f in
             (('ca_pem', 'ca.pem'), ('ca_der', 'ca.der'), ('cert', 'server.pem'), ('key', 'server.key'))}
    pem, der = serialization.Encoding.PEM, serialization.Encoding.DER
    with open(paths['ca_pem'], 'wb') as f:
        f.write(ca.public_bytes(pem))
    with open(paths['ca_der'], 'wb') as f:
        f.write(ca.public_bytes(der))
    with open(paths['cert'], 'wb') as f:
        f.write(cert.public_bytes(pem))
    with open(paths['key'], 'wb') as f:
        f.write(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return paths


# --- the fake API ------------------------------------------------------------------------------


def parse_multipart(ctype, body):
    """{name: (bytes, content_type, filename)} from a multipart/form-data body (email package)."""
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b'Content-Type: ' + ctype.encode() + b'\r\nMIME-Version: 1.0\r\n\r\n' + body)
    if not msg.is_multipart() or msg.defects:
        raise ValueError('bad multipart body: %s' % (msg.defects or 'not multipart'))
    out = {}
    for part in msg.iter_parts():
        name = part.get_param('name', header='content-disposition')
        if not name:
            raise ValueError('a part without a name')
        out[name] = (part.get_payload(decode=True), part.get_content_type(), part.get_filename())
    return out


def check_jpeg(data):
    try:
        from PIL import Image
    except ImportError:
        return data[:2] == b'\xff\xd8' and data[-2:] == b'\xff\xd9'
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
        return im.format == 'JPEG'
    except Exception:
        return False


class FakeTelegram:
    def __init__(self, tokens, certfile, keyfile, port=0, max_timeout=60):
        self.tokens = set([tokens] if isinstance(tokens, str) else tokens)
        self.lock = threading.Condition()
        self.photos = []     # dicts: chat_id, caption, jpeg, t, valid, file_id
        self.documents = []  # dicts: chat_id, caption, data, filename, content_type, t, by_reference
        self.messages = []   # dicts: chat_id, text, t
        self.menus = []      # setMyCommands payloads
        self.calls = []      # (t, method, status)
        self.offsets = []    # every getUpdates offset, in order
        self.updates = []    # pending (unconfirmed) updates
        self.next_update = 1000
        self.faults = []     # dicts: method, kind, retry_after, delay
        self.tls_failures = 0
        self.bad_requests = []
        self.max_timeout = max_timeout
        self.files = {}
        self.closing = False
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certfile, keyfile)
        fake = self

        class Handler(_Handler):
            api = fake

        self.httpd = _Server(('127.0.0.1', port), Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True,
                                            do_handshake_on_connect=False)
        self.port = self.httpd.server_address[1]
        self.url = 'https://127.0.0.1:%d' % self.port
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        with self.lock:
            self.closing = True
            self.lock.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()

    # --- scripting ---------------------------------------------------------------------------
    def add_update(self, chat_id, text, date=None):
        with self.lock:
            uid = self.next_update
            self.next_update += 1
            self.updates.append({'update_id': uid, 'message': {
                'message_id': uid, 'date': int(date or time.time()), 'text': text,
                'chat': {'id': chat_id, 'type': 'private'}, 'from': {'id': chat_id, 'is_bot': False}}})
            self.lock.notify_all()
            return uid

    def fail(self, method, kind, count=1, retry_after=1, delay=0.0):
        """kind: '429', '502', 'reset' (RST before any answer), 'hang' (stall `delay` s, then
        close without answer), 'slow' (answer normally after `delay` s)."""
        with self.lock:
            for _ in range(count):
                self.faults.append({'method': method, 'kind': kind, 'retry_after': retry_after,
                                    'delay': delay})

    def wait(self, predicate, timeout=20.0):
        deadline = time.monotonic() + timeout
        with self.lock:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.lock.wait(min(left, 0.2))
        return True

    def _fault(self, method):
        with self.lock:
            for f in self.faults:
                if f['method'] in (method, '*'):
                    self.faults.remove(f)
                    return f
        return None

    # --- methods -----------------------------------------------------------------------------
    def handle(self, method, params, files):
        """-> (status, json answer) for one call."""
        if method == 'getMe':
            return 200, {'ok': True, 'result': {'id': 1, 'is_bot': True, 'username': 'fake_bot'}}
        if method == 'sendPhoto':
            chat = _int(params.get('chat_id'))
            if chat is None:
                return 400, _err(400, 'Bad Request: chat_id is empty')
            caption = params.get('caption', '')
            if 'photo' in files:
                jpeg, ctype, filename = files['photo']
                if not check_jpeg(jpeg):
                    return 400, _err(400, 'Bad Request: IMAGE_PROCESS_FAILED')
            else:
                jpeg = self.files.get(params.get('photo'))
                if jpeg is None:
                    return 400, _err(400, 'Bad Request: wrong file identifier')
            with self.lock:
                file_id = 'file%d' % (len(self.files) + 1)
                self.files.setdefault(file_id, jpeg)
                self.photos.append({'chat_id': chat, 'caption': caption, 'jpeg': jpeg,
                                    't': time.monotonic(), 'by_reference': 'photo' not in files})
                self.lock.notify_all()
            return 200, {'ok': True, 'result': {'message_id': len(self.photos), 'chat': {'id': chat},
                                                'photo': [{'file_id': file_id, 'width': 640}]}}
        if method == 'sendDocument':
            chat = _int(params.get('chat_id'))
            if chat is None:
                return 400, _err(400, 'Bad Request: chat_id is empty')
            if 'document' in files:
                data, ctype, filename = files['document']
                if not data:
                    return 400, _err(400, 'Bad Request: file must be non-empty')
            else:
                data = self.files.get(params.get('document'))
                ctype = filename = None
                if data is None:
                    return 400, _err(400, 'Bad Request: wrong file identifier')
            with self.lock:
                file_id = 'file%d' % (len(self.files) + 1)
                self.files.setdefault(file_id, data)
                self.documents.append({'chat_id': chat, 'caption': params.get('caption', ''),
                                       'data': data, 'filename': filename, 'content_type': ctype,
                                       't': time.monotonic(), 'by_reference': 'document' not in files})
                self.lock.notify_all()
            return 200, {'ok': True, 'result': {'message_id': len(self.documents), 'chat': {'id': chat},
                                                'document': {'file_id': file_id, 'file_name': filename,
                                                             'file_size': len(data)}}}
        if method == 'sendMessage':
            chat, text = _int(params.get('chat_id')), params.get('text')
            if chat is None or not text:
                return 400, _err(400, 'Bad Request: message text is empty')
            with self.lock:
                self.messages.append({'chat_id': chat, 'text': text, 't': time.monotonic()})
                self.lock.notify_all()
            return 200, {'ok': True, 'result': {'message_id': len(self.messages)}}
        if method == 'setMyCommands':
            cmds = params.get('commands')
            if isinstance(cmds, str):
                cmds = json.loads(cmds)
            with self.lock:
                self.menus.append(cmds)
                self.lock.notify_all()
            return 200, {'ok': True, 'result': True}
        if method == 'getUpdates':
            offset = _int(params.get('offset')) or 0
            timeout = min(_int(params.get('timeout')) or 0, self.max_timeout)
            limit = _int(params.get('limit')) or 100
            deadline = time.monotonic() + timeout
            with self.lock:
                self.offsets.append(offset)
                if offset:
                    self.updates = [u for u in self.updates if u['update_id'] >= offset]
                self.lock.notify_all()
                while not self.updates and not self.closing:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self.lock.wait(min(left, 0.2))
                return 200, {'ok': True, 'result': self.updates[:limit]}
        return 404, _err(404, 'Not Found: method not found')


def _int(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _err(code, desc, **params):
    out = {'ok': False, 'error_code': code, 'description': desc}
    if params:
        out['parameters'] = params
    return out


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # injected resets and clients that give up are expected here


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    api = None

    def log_message(self, fmt, *args):
        pass

    def handle(self):
        try:
            self.connection.do_handshake()
        except (ssl.SSLError, OSError):
            with self.api.lock:
                self.api.tls_failures += 1
                self.api.lock.notify_all()
            return
        try:
            super().handle()
        except (ssl.SSLError, ConnectionError, socket.timeout):
            pass

    def do_GET(self):
        self._serve(b'')

    def do_POST(self):
        n = int(self.headers.get('Content-Length') or 0)
        body = b''
        while len(body) < n:
            chunk = self.rfile.read(n - len(body))
            if not chunk:
                return
            body += chunk
        self._serve(body)

    def _serve(self, body):
        api = self.api
        url = urllib.parse.urlsplit(self.path)
        parts = url.path.split('/')
        if len(parts) != 3 or not parts[1].startswith('bot'):
            return self._answer(404, _err(404, 'Not Found'), '?')
        token, method = parts[1][3:], parts[2]
        fault = api._fault(method)
        if fault:
            if fault['kind'] == 'reset':
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
                self.close_connection = True
                self._record(method, 'reset')
                self.connection.close()
                return
            if fault['kind'] == 'hang':
                time.sleep(fault['delay'])
                self.close_connection = True
                self._record(method, 'hang')
                return
            if fault['kind'] == '429':
                return self._answer(429, _err(429, 'Too Many Requests: retry after %d' % fault['retry_after'],
                                             retry_after=fault['retry_after']), method)
            if fault['kind'] == '502':
                return self._answer(502, None, method)
            if fault['kind'] == 'slow':
                time.sleep(fault['delay'])
        if token not in api.tokens:
            return self._answer(401, _err(401, 'Unauthorized'), method)
        params = dict(urllib.parse.parse_qsl(url.query))
        files = {}
        ctype = self.headers.get('Content-Type', '')
        try:
            if ctype.startswith('multipart/form-data'):
                for name, (data, _, filename) in parse_multipart(ctype, body).items():
                    if filename:
                        files[name] = (data, _, filename)
                    else:
                        params[name] = data.decode()
            elif ctype.startswith('application/json'):
                params.update(json.loads(body))
            elif body:
                params.update(urllib.parse.parse_qsl(body.decode()))
        except (ValueError, UnicodeDecodeError) as e:
            with api.lock:
                api.bad_requests.append((method, str(e)))
            return self._answer(400, _err(400, 'Bad Request: %s' % e), method)
        status, answer = api.handle(method, params, files)
        self._answer(status, answer, method)

    def _record(self, method, status):
        with self.api.lock:
            self.api.calls.append((time.monotonic(), method, status))
            self.api.lock.notify_all()

    def _answer(self, status, answer, method):
        self._record(method, status)
        if answer is None:
            data, ctype = b'<html><body>502 Bad Gateway</body></html>', 'text/html'
        else:
            data, ctype = json.dumps(answer).encode(), 'application/json'
        self.send_response(status)
        self.send_header('Content-Type', ctype)
        self.send_header('Content-Length', str(len(data)))
        self.send_header('Connection', 'close')
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True


# --- the firmware side: tools/testkit/vm/telegram_driver.py on the real VM -----------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VM = os.path.join(ROOT, '.venv', 'bin', 'micropython')


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def make_jpeg(size=60000, seed=1):
    """A valid JPEG of roughly `size` bytes (noise compresses badly, so quality sets the size)."""
    import random

    from PIL import Image
    rnd = random.Random(seed)
    w, h = 640, 480
    im = Image.new('RGB', (w, h))
    px = bytes(rnd.getrandbits(8) for _ in range(w * h // 64 * 3))
    small = Image.frombytes('RGB', (w // 8, h // 8), px)
    im = small.resize((w, h), Image.BILINEAR)
    best = None
    for q in range(5, 96, 5):
        buf = io.BytesIO()
        im.save(buf, 'JPEG', quality=q)
        if best is None or abs(buf.tell() - size) < abs(len(best) - size):
            best = buf.getvalue()
    return best


class Driver:
    """The Telegram service on the VM (tools/testkit/vm/telegram_driver.py) in a temp flash dir, ordered
    over a loopback JSON-line socket; its console goes to `console.log` in that dir."""

    def __init__(self, flash, telegram, jpeg, heapsize=None, device='e32cam001'):
        self.flash = flash
        os.makedirs(flash, exist_ok=True)
        with open(os.path.join(flash, 'config.json'), 'w') as f:
            json.dump({'device': {'name': device}, 'telegram': telegram}, f)
        with open(os.path.join(flash, 'photo.jpg'), 'wb') as f:
            f.write(jpeg)
        self.port = free_port()
        env = dict(os.environ, MICROPYPATH=':'.join(
            ('.frozen', os.path.join(ROOT, 'tools', 'sim', 'board'), os.path.join(ROOT, 'lib'), ROOT)))
        cmd = [VM] + (['-X', 'heapsize=%s' % heapsize] if heapsize else []) + [
            os.path.join(ROOT, 'tools', 'testkit', 'vm', 'telegram_driver.py'), str(self.port)]
        self.console = open(os.path.join(flash, 'console.log'), 'wb')
        import subprocess
        self.proc = subprocess.Popen(cmd, cwd=flash, env=env, stdout=self.console,
                                     stderr=subprocess.STDOUT)
        self.sock = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                self.sock = socket.create_connection(('127.0.0.1', self.port), timeout=30)
                break
            except OSError:
                time.sleep(0.05)
        if self.sock is None:
            out = self.output()
            self.stop()
            raise RuntimeError('telegram driver did not start:\n' + out)
        self.rfile = self.sock.makefile('rb')

    def order(self, **msg):
        self.sock.sendall(json.dumps(msg).encode() + b'\n')
        line = self.rfile.readline()
        if not line:
            raise RuntimeError('driver gone:\n' + self.output())
        return json.loads(line)

    def status(self):
        return self.order(op='status')

    def output(self):
        with open(os.path.join(self.flash, 'console.log'), 'rb') as f:
            return f.read().decode('utf-8', 'replace')

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.sock:
            self.sock.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.console.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--dir', default='sim/fake_telegram', help='where the test CA and photos go')
    ap.add_argument('--token', required=True)
    ap.add_argument('--port', type=int, default=8443)
    args = ap.parse_args()
    paths = make_ca(args.dir)
    fake = FakeTelegram(args.token, paths['cert'], paths['key'], args.port).start()
    print('fake Bot API on %s; set telegram.api_url to it and telegram.ca_file to %s'
          % (fake.url, os.path.abspath(paths['ca_der'])))
    print('type "<chat_id> <text>" to send an update, an empty line to list, Ctrl-C to stop')
    shown = [0, 0]
    try:
        for line in sys.stdin:
            chat, _, text = line.strip().partition(' ')
            if chat.lstrip('-').isdigit() and text:
                fake.add_update(int(chat), text)
            with fake.lock:
                photos, messages = fake.photos[shown[0]:], fake.messages[shown[1]:]
            for p in photos:
                shown[0] += 1
                path = os.path.join(args.dir, 'photo%d.jpg' % shown[0])
                with open(path, 'wb') as f:
                    f.write(p['jpeg'])
                print('photo to', p['chat_id'], repr(p['caption']), '->', path)
            for m in messages:
                shown[1] += 1
                print('message to', m['chat_id'], repr(m['text']))
    except KeyboardInterrupt:
        pass
    fake.stop()


if __name__ == '__main__':
    main()
