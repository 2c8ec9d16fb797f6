"""What the three web servers share: how they listen, how they refuse, how they send a JPEG.

microdot's own start_server listens with asyncio's default backlog of 5 and offers no way to
raise it, so a burst of viewers connecting at once loses SYNs and waits a second for the retry.
`serve()` opens the listener itself with a configured backlog and hands each connection to the
app, closing the socket whatever the handler raised.
"""
import asyncio
import gc
import time

from microdot import Request, Response

from firmware.core import aio

# One set of request limits for every app in the process (microdot keeps them per class).
Request.max_content_length = 4096
Request.max_body_length = 4096
Request.max_readline = 1024

# Cross-origin reads only for the origins in http.cors_origins (an NVR's web UI, say): unlike
# CameraWebServer's `*`, a page a LAN user opens elsewhere cannot read a snapshot or the state.
ORIGINS = []
# Every page and answer: never framed by another site, never leaks its URL as a Referer.
PAGE_HEADERS = {'Referrer-Policy': 'no-referrer', 'X-Frame-Options': 'DENY',
                'Content-Security-Policy': "frame-ancestors 'none'",
                'X-Content-Type-Options': 'nosniff'}
REASONS = {400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found',
           405: 'Method Not Allowed', 409: 'Conflict', 413: 'Payload Too Large',
           416: 'Range Not Satisfiable', 429: 'Too Many Requests',
           500: 'Internal Server Error', 503: 'Service Unavailable'}


def error(status, text, headers=None):
    h = {'Content-Type': 'text/plain; charset=UTF-8'}
    if headers:
        h.update(headers)
    return Response(text + '\n', status, h, reason=REASONS.get(status))


# The pages live in files next to this module (firmware/web/www/), streamed from flash in small
# chunks, so their text never sits in the heap.
WWW = __file__.rsplit('/', 1)[0] + '/www/'


def page(name):
    return Response.send_file(WWW + name, content_type='text/html; charset=UTF-8',
                              max_age=0)


def redirect(location):
    return Response('', 302, {'Location': location})


def allow_origins(origins):
    ORIGINS[:] = origins


def same_origin(req):
    """False for a request a browser sent for a page of another origin: its Origin is not this
    server (http://<Host>; https:// is not us either), or it has no Origin but carries a
    browser's marks (Sec-Fetch-*, Referer, a browser's User-Agent). A script or curl with
    credentials sends none of these and passes."""
    origin = req.headers.get('Origin')
    if origin is not None:
        return origin == 'http://' + req.headers.get('Host', '')
    h = req.headers
    site = h.get('Sec-Fetch-Site')
    if site is not None:
        return site in ('same-origin', 'none')
    return 'Referer' not in h and 'Mozilla' not in h.get('User-Agent', '')


def cross_site(req):
    """A browser request from a page of another site (an <img> or a form on a web page): the
    browser says so in Sec-Fetch-Site, or its Origin is not ours nor a configured one."""
    site = req.headers.get('Sec-Fetch-Site')
    if site == 'cross-site':
        return True
    origin = req.headers.get('Origin')
    return origin is not None and origin != 'http://' + req.headers.get('Host', '') \
        and origin not in ORIGINS


def common(app, log, guard=None):
    """Clear, plain-text errors the way CameraWebServer answers, anti-framing headers, and CORS
    for the configured origins only; `guard` (request -> None, or why it is forbidden) runs
    before every route, e.g. the key of a server opened to the Internet."""

    if guard:
        @app.before_request
        async def check(req):
            why = guard(req)
            return None if why is None else error(403, why)

    @app.errorhandler(404)
    async def not_found(req):
        return error(404, 'not found: %s' % (req.path if req else '?'))

    @app.errorhandler(405)
    async def not_allowed(req):
        return error(405, 'method not allowed: %s %s' % (req.method, req.path))

    @app.errorhandler(413)
    async def too_large(req):
        return error(413, 'request too large (limit %d bytes)' % Request.max_content_length)

    @app.errorhandler(400)
    async def bad(req):
        return error(400, 'bad request')

    @app.errorhandler(ValueError)
    async def bad_value(req, exc):
        return error(400, 'bad request: %s' % (exc.args[0] if exc.args else 'malformed'))

    @app.errorhandler(Exception)
    async def crashed(req, exc):
        log.error('http', req.path if req else '?', 'failed:', repr(exc))
        return error(500, 'internal error')

    @app.after_request
    async def headers(req, res):
        h = res.headers
        for k in PAGE_HEADERS:
            h.setdefault(k, PAGE_HEADERS[k])
        origin = req.headers.get('Origin') if req else None
        if origin and origin in ORIGINS:
            h['Access-Control-Allow-Origin'] = origin
            h['Vary'] = 'Origin'
        return res


class _Once:
    """A response body that sends one buffer straight from memory: asyncio's Stream.write would
    copy whatever the socket did not take at once (most of a frame on lwIP's small buffers)."""

    def __init__(self, req, buf):
        self.stream = aio.connection(req)
        self.buf = buf

    def __aiter__(self):
        return self

    async def __anext__(self):
        buf = self.buf
        if buf is None:
            raise StopAsyncIteration
        self.buf = None
        await aio.send_all(self.stream, buf)
        return b''


async def snapshot(req, cam, filename, cws=False):
    """One JPEG with CameraWebServer's /capture headers, sent without a copy; `cws`: lit by the
    flash LED at led_intensity, as CameraWebServer's /capture."""
    try:
        frame = await cam.snapshot(cws=cws)
    except OSError as e:
        return error(503, str(e.args[0]) if e.args else 'camera unavailable')
    us = cam.stamp_us
    return jpeg(req, frame, filename, {'X-Timestamp': '%d.%06d' % (us // 1000000, us % 1000000)})


def jpeg(req, frame, filename, headers=None):
    """A JPEG already in memory as the answer, sent without a copy."""
    h = {'Content-Type': 'image/jpeg', 'Content-Disposition': 'inline; filename=' + filename,
         'Cache-Control': 'no-store', 'Content-Length': str(len(frame))}
    if headers:
        h.update(headers)
    return Response(_Once(req, frame), 200, h)


def quiet(log):
    """microdot prints a whole traceback for every request it cannot parse; one line will do
    (a fuzzer or a port scanner would otherwise flood the serial console)."""
    aio.on_bad_request(lambda e: log.warn('http: bad request:', repr(e)))


class Budget:
    """The connections the three servers may hold together, as a board's 10-16 sockets allow.

    The control and stream ports share `max_connections`; the admin port has `admin_reserve` of
    its own that they can never take, so a flood on the camera's ports never locks the owner
    out (LFCP's UDP socket is opened at boot and kept). One client address holds at most
    `per_client` connections on a port (one less than the reserve on the admin port): a new one
    replaces its oldest. When a port's share is full, the connection that has waited longest
    without sending its request is dropped to make room (a real client sends its request at
    once); with none idle, the newcomer is refused with 503 and Retry-After.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        self.conns = []             # [listener, host, aio.Reader, task, ticks_ms accepted]
        self.refused = 0
        self.evicted = 0
        self.timeouts = 0
        self.caps = (64, 16)        # what the board's sockets allow (fit)

    def fit(self, free):
        """Shrink the shares to the `free` sockets the board has for the listeners and their
        connections, so that a flood meets this budget and not lwIP's table, which would refuse
        the owner too. True when the configured shares did not fit."""
        c = self.cfg
        room = free - 4             # the three listeners and LFCP's UDP socket
        admin = min(c.admin_reserve, max(2, room // 3))
        self.caps = (min(c.max_connections, max(2, room - admin)), admin)
        return self.caps != (c.max_connections, c.admin_reserve)

    def _share(self, admin):
        c = self.cfg
        if admin:
            n = min(c.admin_reserve, self.caps[1])
            return n, max(1, n - 1)
        return min(c.max_connections, self.caps[0]), c.per_client

    def admit(self, listener, host):
        """None when a connection from `host` may be served now (room was made if needed), else
        why not."""
        limit, per = self._share(listener.admin)
        mine = 0
        used = 0
        idle = None
        oldest = None
        for c in self.conns:
            if c[0].admin != listener.admin:
                continue
            used += 1
            if c[0] is listener and c[1] == host:
                mine += 1
                # the oldest; on a page's port its idle ones first
                idler = 0 if listener.streams else c[2].reading - oldest[2].reading if oldest else 0
                if oldest is None or idler > 0 or (
                        idler == 0 and time.ticks_diff(c[4], oldest[4]) < 0):
                    oldest = c
            if c[2].reading and (idle is None or time.ticks_diff(c[4], idle[4]) < 0):
                idle = c
        if mine >= per:
            # a client only ever competes with itself: a viewer that reconnects replaces its last
            # stream, whose disconnect may not be noticed yet; but a browser's parallel requests
            # to a page's port are never cut off mid-answer (the page saw "Failed to fetch"):
            # the newcomer has a free socket of the share, or waits for its turn with a 503
            if oldest[2].reading or listener.streams:
                self._drop(oldest)
            elif used >= limit:
                return '%d connections from %s busy' % (mine, host)
        elif used >= limit:
            if idle is None:
                return 'all %d connections busy' % limit
            self._drop(idle)
        return None

    def free_one(self, listener):
        """Close the connection idle longest, so that `listener`'s accept finds a socket: with the
        board's table full of idle connections none could be accepted to evict another. The admin
        port may take one from the camera ports, never the other way round."""
        idle = None
        for c in self.conns:
            if c[2].reading and (listener.admin or not c[0].admin) and (
                    idle is None or time.ticks_diff(c[4], idle[4]) < 0):
                idle = c
        if idle:
            self._drop(idle)        # its socket is free for our retry
        return idle is not None

    def _drop(self, c):
        self.evicted += 1
        self.conns.remove(c)
        c[3].cancel()
        if c[2].reading:
            # an idle one gives its socket back now, not at its task's turn: in a burst the
            # next accepts would find the board's table full and the stack would drop the
            # client (a legitimate one among them) before the firmware ever sees it
            aio.raw(c[2].s).close()

    async def reap(self):
        """Close connections whose request is not complete `request_timeout_s` after they
        were accepted (one timer for all: nothing is allocated per request for it)."""
        while True:
            await asyncio.sleep_ms(500)
            now = time.ticks_ms()
            limit = self.cfg.request_timeout_s * 1000
            for c in self.conns:
                if c[2].reading and time.ticks_diff(now, c[4]) > limit:
                    self.timeouts += 1
                    self.conns.remove(c)
                    c[3].cancel()
                    break                   # the list changed: the rest wait half a second

    def status(self):
        return {'open': len(self.conns), 'refused': self.refused, 'evicted': self.evicted,
                'timeouts': self.timeouts, 'camera_share': self._share(False)[0],
                'admin_share': self._share(True)[0]}


class Listener:
    """One app on one port, with our backlog and accept loop (run by the supervisor: a loop that
    dies is restarted and reported); close() stops accepting."""

    BUSY = b'HTTP/1.0 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Length: 5\r\n\r\nbusy\n'

    def __init__(self, app, host, port, backlog, log, budget, on_connect=None, admin=False,
                 streams=False):
        self.app = app
        self.streams = streams          # its connections last: a client's newest replaces its oldest
        self.on_connect = on_connect    # fn(), before a connection's request is read
        self.host = host
        self.port = port
        self.backlog = backlog
        self.log = log
        self.budget = budget
        self.admin = admin
        self.sock = None
        self.connections = 0
        self.no_memory = 0

    @property
    def open(self):
        return sum(1 for c in self.budget.conns if c[0] is self)

    async def run(self):
        if self.sock is None:
            self.sock = aio.listen(self.host, self.port, self.backlog)
        b = self.budget
        while True:
            try:
                s, addr = await aio.accept(self.sock)
            except OSError:
                # No socket left for it (the stack dropped that one): an idle connection gives
                # its socket up for the next, else the backlog waits
                await asyncio.sleep_ms(0 if b.free_one(self) else 50)
                continue
            try:
                host = aio.host_of(addr)
                why = b.admit(self, host)
                if why:
                    b.refused += 1
                    aio.refuse(s, self.BUSY)
                    continue
                self.connections += 1
                conn = [self, host, None, None, time.ticks_ms()]
                conn[2] = aio.Reader(aio.stream(s, addr))
                conn[3] = asyncio.create_task(self._serve(conn))
                b.conns.append(conn)
                # let it read a request that came with it before the next accept: a burst of
                # idle connections then evicts each other, not the client that spoke at once
                await asyncio.sleep_ms(0)
            except MemoryError:
                # No heap for this connection's task: refuse it, never the listener.
                self.no_memory += 1
                s.close()
                gc.collect()
                await asyncio.sleep_ms(100)

    async def _serve(self, conn):
        reader = conn[2]
        writer = reader.s
        if self.on_connect:
            self.on_connect()
        try:
            await self.app.handle_request(reader, writer)
        except Exception as e:  # whatever the client did, the socket is closed and counted
            if not isinstance(e, OSError):
                self.log.warn('http', self.port, 'connection failed:', repr(e))
        finally:
            if conn in self.budget.conns:
                self.budget.conns.remove(conn)
            try:
                writer.close()
                await writer.wait_closed()
            except BaseException:
                pass

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None
