"""The firmware's one HTTP/1.1 client, on asyncio sockets, with verified TLS.

Why not urequests: it blocks the whole VM for the length of a request, so the stream and the UDP
service would freeze for seconds per photo. Here every wait is an asyncio wait, uploads go out in
small slices with a yield between them, and each phase (connect, send, receive) has a timeout.

Errors never carry the URL path, which holds the Telegram token: they name host:port only.
HTTP error statuses are answers, not exceptions: the caller reads Response.status.
"""
import asyncio
import socket
import time
from errno import ECONNRESET, EINPROGRESS, ETIMEDOUT

from firmware.core import clock
from firmware.core.aio import readable, writable

CHUNK = 2048  # bytes per socket write: small enough to yield often, large enough for TLS records
DNS_TTL_MS = 600000
DNS_FAIL_MS = 30000
MAX_HEADER_BYTES = 8192
CERT_REQUIRED = 2  # ssl.CERT_REQUIRED (ssl loads only with the first https request)

_ERRNO = {104: 'connection reset', 32: 'connection closed by peer', 111: 'connection refused',
          113: 'host unreachable', 110: 'timed out', 12: 'out of memory'}
_dns = {}  # (host, port) -> (expiry ticks, getaddrinfo entry or the OSError of the lookup)
_default_ctx = None


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body


def der_certs(data):
    """DER certificates from DER bytes, PEM text (one or more blocks), or a list of either."""
    if isinstance(data, (list, tuple)):
        out = []
        for d in data:
            out.extend(der_certs(d))
        return out
    if isinstance(data, str):
        data = data.encode()
    if b'-----BEGIN' not in data:
        return [bytes(data)]
    import binascii
    out = []
    for block in data.split(b'-----BEGIN CERTIFICATE-----')[1:]:
        end = block.find(b'-----END')
        if end < 0:
            raise ValueError('PEM: unterminated certificate')
        out.append(binascii.a2b_base64(block[:end].replace(b'\r', b'').replace(b'\n', b'')))
    if not out:
        raise ValueError('PEM: no certificate found')
    return out


def tls_context(ca_data):
    """A client context that verifies the server against `ca_data` (DER, PEM or a list)."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if not hasattr(ctx, 'load_verify_locations'):
        return _Context121(der_certs(ca_data))
    ctx.verify_mode = ssl.CERT_REQUIRED
    for der in der_certs(ca_data):
        ctx.load_verify_locations(cadata=der)
    return ctx


class _Context121:
    """MicroPython 1.21's SSLContext cannot be given CA certificates (load_verify_locations came
    in 1.22): there they go with each socket, through ssl.wrap_socket's `cadata`, as one PEM
    text that mbedTLS reads whole."""

    def __init__(self, ders):
        import binascii
        import ssl
        self.verify_mode = ssl.CERT_REQUIRED
        pem = []
        for der in ders:
            pem.append(b'-----BEGIN CERTIFICATE-----\n')
            pem.append(binascii.b2a_base64(der))
            pem.append(b'-----END CERTIFICATE-----\n')
        self.cadata = b''.join(pem)

    def wrap_socket(self, sock, server_hostname=None, do_handshake_on_connect=True):
        import ssl
        return ssl.wrap_socket(sock, server_hostname=server_hostname, cert_reqs=self.verify_mode,
                               cadata=self.cadata, do_handshake=do_handshake_on_connect)


def default_context():
    global _default_ctx
    if _default_ctx is None:
        from firmware.net import ca_roots as ca
        _default_ctx = tls_context(list(ca.ROOTS))
    return _default_ctx


def urlsplit(url):
    """-> (https, host, port, path); the path keeps its query string."""
    if url.startswith('https://'):
        https, rest = True, url[8:]
    elif url.startswith('http://'):
        https, rest = False, url[7:]
    else:
        raise ValueError('http: only http:// and https:// URLs')
    i = rest.find('/')
    hostport, path = (rest, '/') if i < 0 else (rest[:i], rest[i:])
    port = 443 if https else 80
    if hostport.startswith('['):  # [v6]:port
        j = hostport.find(']')
        host, tail = hostport[1:j], hostport[j + 1:]
        if tail.startswith(':'):
            port = int(tail[1:])
    elif ':' in hostport:
        host, p = hostport.rsplit(':', 1)
        port = int(p)
    else:
        host = hostport
    if not host or not 0 < port < 65536:
        raise ValueError('http: bad host or port')
    return https, host, port, path


def resolve(host, port):
    """getaddrinfo blocks the VM: an answer is kept DNS_TTL_MS, a failure DNS_FAIL_MS (so the
    retries of every client during an outage do not each stall the loop for the resolver's
    timeout)."""
    key = (host, port)
    hit = _dns.get(key)
    now = time.ticks_ms()
    if hit and time.ticks_diff(hit[0], now) > 0:
        if isinstance(hit[1], OSError):
            raise hit[1]
        return hit[1]
    if len(_dns) > 8:
        _dns.clear()
    try:
        ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
    except OSError as e:
        err = OSError(e.errno, '%s:%d: DNS lookup failed (%s)' % (host, port, e))
        _dns[key] = (time.ticks_add(now, DNS_FAIL_MS), err)
        raise err
    _dns[key] = (time.ticks_add(now, DNS_TTL_MS), ai)
    return ai


def forget(host, port):
    _dns.pop((host, port), None)


# async
def _connect(ai):
    s = socket.socket(ai[0], ai[1], ai[2])
    s.setblocking(False)
    try:
        s.connect(ai[-1])
    except OSError as e:
        if e.errno != EINPROGRESS:
            s.close()
            raise
    yield from writable(s)
    return s


class _Conn:
    """One connection: writes in CHUNK slices, buffered reads for the head, readinto for bodies.

    asyncio waits on the plain socket, never on the TLS object: this MicroPython's select.poll
    corrupts a registered non-fd object (a TLS socket) when its pollfd array grows, which
    crashed the VM as soon as a few more sockets were open. So every call tries the socket
    first and, when it would block, waits for the plain socket: readable while the TLS
    handshake is under way or an answer is awaited, writable when a send is held up.
    """

    def __init__(self, s, raw, tls):
        self.s = s
        self.raw = raw
        self.shaking = tls  # the handshake runs inside the first write
        self.buf = bytearray(512)
        self.start = 0
        self.end = 0

    # async
    def send(self, data):
        mv = memoryview(data)
        n = len(mv)
        off = 0
        while off < n:
            ret = self.s.write(mv[off:off + CHUNK])
            if ret:
                off += ret
                self.shaking = False
                yield from writable(self.raw)  # a turn for the other tasks between slices
            elif self.shaking:
                yield from readable(self.raw)
            else:
                yield from writable(self.raw)

    async def send_all(self, parts):
        for p in parts:
            if isinstance(p, FilePart):
                await self.send_file(p)
            else:
                await self.send(p)

    async def send_file(self, part):
        buf = bytearray(CHUNK)
        mv = memoryview(buf)
        left = part.size
        with open(part.path, 'rb') as f:
            while left > 0:
                n = f.readinto(mv[:min(CHUNK, left)])
                if not n:
                    raise OSError(5, 'file %s ended early' % part.path)
                left -= n
                await self.send(mv[:n])

    # async
    def _fill(self):
        while True:
            n = self.s.readinto(self.buf)
            if n is not None:
                self.start, self.end = 0, n
                return n
            yield from readable(self.raw)

    async def line(self):
        out = b''
        while True:
            if self.start == self.end and not await self._fill():
                return out
            i = self.buf.find(b'\n', self.start, self.end)
            stop = self.end if i < 0 else i + 1
            out += self.buf[self.start:stop]
            self.start = stop
            if i >= 0:
                return out
            if len(out) > MAX_HEADER_BYTES:
                raise ValueError('header line too long')

    # async
    def into(self, mv):
        """Fill memoryview `mv` completely; EOFError if the peer closes first."""
        got = 0
        n = len(mv)
        if self.start < self.end:
            k = min(self.end - self.start, n)
            mv[:k] = memoryview(self.buf)[self.start:self.start + k]
            self.start += k
            got = k
        while got < n:  # the rest goes straight from the socket into the caller's buffer
            k = self.s.readinto(mv[got:])
            if k is None:
                yield from readable(self.raw)
            elif not k:
                raise EOFError
            else:
                got += k
        return got

    async def rest(self, limit):
        """Everything up to EOF, at most `limit` bytes (ValueError beyond)."""
        out = bytearray()
        while True:
            if self.start == self.end and not await self._fill():
                return out
            out += self.buf[self.start:self.end]
            self.start = self.end
            if len(out) > limit:
                raise ValueError('response body larger than %d bytes' % limit)


async def _receive(r, method, max_body):
    line = await r.line()
    if not line:
        raise EOFError
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b'HTTP/'):
        raise ValueError('not an HTTP response')
    status = int(parts[1])
    headers = {}
    size = 0
    while True:
        line = await r.line()
        size += len(line)
        if size > MAX_HEADER_BYTES:
            raise ValueError('response headers too large')
        line = line.strip()
        if not line:
            break
        i = line.find(b':')
        if i > 0:
            k = line[:i].decode().strip().lower()
            v = line[i + 1:].decode().strip()
            headers[k] = headers[k] + ', ' + v if k in headers else v
    if method == 'HEAD' or status in (204, 304) or 100 <= status < 200:
        return Response(status, headers, b'')
    if 'chunked' in headers.get('transfer-encoding', '').lower():
        body = bytearray()
        while True:
            n = int(bytes(await r.line()).split(b';')[0].strip(), 16)
            if n == 0:
                break
            if len(body) + n > max_body:
                raise ValueError('response body larger than %d bytes' % max_body)
            start = len(body)
            body.extend(bytes(n))  # grow in place, then read into the new tail
            await r.into(memoryview(body)[start:])
            await r.line()
        while (await r.line()).strip():  # trailers
            pass
        return Response(status, headers, bytes(body))
    if 'content-length' in headers:
        n = int(headers['content-length'])
        if n > max_body:
            raise ValueError('response body of %d bytes, limit %d' % (n, max_body))
        body = bytearray(n)
        await r.into(memoryview(body))
        return Response(status, headers, bytes(body))
    return Response(status, headers, bytes(await r.rest(max_body)))


class FilePart:
    """A body part read from a file (a clip on the card) in CHUNK slices, never whole in the heap."""

    def __init__(self, path, size):
        self.path = path
        self.size = size

    def __len__(self):
        return self.size


def _parts(body):
    if body is None:
        return ()
    if not isinstance(body, (list, tuple)):
        body = (body,)
    return [p.encode() if isinstance(p, str) else p for p in body]


async def request(method, url, headers=None, body=None, timeout=10, ssl=None, max_body=16384):
    """One request on a fresh connection (Connection: close). Timeouts apply per phase."""
    https, host, port, path = urlsplit(url)
    where = '%s:%d' % (host, port)
    parts = _parts(body)
    length = 0
    for p in parts:
        length += len(p)
    head = ['%s %s HTTP/1.1\r\nHost: %s\r\n' % (method, path, host if port in (80, 443) else where),
            'Connection: close\r\nUser-Agent: esp32cam-alarm\r\n']
    if body is not None or method in ('POST', 'PUT'):
        head.append('Content-Length: %d\r\n' % length)
    if headers:
        for k in headers:
            head.append('%s: %s\r\n' % (k, headers[k]))
    head.append('\r\n')
    head = ''.join(head).encode()
    phase = 'connect'
    s = None
    if https:
        ctx = ssl or default_context()
        if ctx.verify_mode == CERT_REQUIRED and not clock.is_set():
            # mbedTLS checks the certificates' dates against the clock, and a board's reads 2000
            raise ValueError('%s: TLS refused: clock not set (waiting for NTP)' % where)
    try:
        ai = resolve(host, port)
        raw = s = await asyncio.wait_for(_connect(ai), timeout)
        if https:
            s = ctx.wrap_socket(raw, server_hostname=host, do_handshake_on_connect=False)
            s.setblocking(False)
        c = _Conn(s, raw, https)
        await asyncio.wait_for(c.send(head), timeout)  # includes the TLS handshake
        phase = 'send'
        if parts:
            await asyncio.wait_for(c.send_all(parts), timeout)
        phase = 'receive'
        return await asyncio.wait_for(_receive(c, method, max_body), timeout)
    except asyncio.TimeoutError:
        raise OSError(ETIMEDOUT, '%s: %s timed out after %ss' % (where, phase, timeout))
    except EOFError:
        raise OSError(ECONNRESET, '%s: connection closed during %s' % (where, phase))
    except OSError as e:
        if e.args and isinstance(e.args[-1], str) and e.args[-1].startswith(where):
            raise  # already ours (DNS): its failure stays cached
        if phase == 'connect':
            forget(host, port)   # the address may have changed: look it up again next time
        raise OSError(e.errno, '%s: %s failed: %s' % (where, phase, _ERRNO.get(e.errno, 'errno %s' % e.errno)))
    except ValueError as e:  # TLS verification failures come as ValueError from mbedTLS
        msg = e.args[0].strip() if e.args and isinstance(e.args[0], str) else 'bad answer'
        raise ValueError('%s: %s: %s' % (where, 'TLS' if https and phase == 'connect' else phase, msg))
    finally:
        if s is not None:
            try:
                s.close()
            except OSError:
                pass
