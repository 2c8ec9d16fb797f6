"""The one place that reaches into asyncio's and microdot's internals.

MicroPython's asyncio has no public "wait until this socket is readable/writable" (only Stream,
which copies what the socket does not take at once), and microdot keeps the connection's stream
in `req.sock` and prints a traceback per unparseable request. The firmware needs all three (a
frame written from memory, UDP and raw TLS sockets on the loop, a quiet console), so they live
here: an asyncio or microdot upgrade is checked against this file alone.
"""
import asyncio


# async: `await readable(sock)` returns when the loop's poller says the socket can be read
def readable(sock):
    yield asyncio.core._io_queue.queue_read(sock)


# async
def writable(sock):
    yield asyncio.core._io_queue.queue_write(sock)


def connection(req):
    """The asyncio Stream of a microdot request's connection (req.stream is its body)."""
    return req.sock[1]


def raw(stream):
    """The socket under an asyncio Stream."""
    return stream.s


async def send_all(stream, buf):
    """Write all of `buf` to the stream's socket without copying it; OSError on failure."""
    sock = stream.s
    mv = memoryview(buf)
    off = 0
    n = len(buf)
    io = asyncio.core._io_queue
    while off < n:
        yield io.queue_write(sock)  # in place: no waiter object per write on the frame path
        w = sock.write(mv[off:])
        if w is None:
            continue
        if w <= 0:
            raise OSError(104)
        off += w


def on_bad_request(fn):
    """fn(exception) instead of microdot's traceback for a request it cannot parse."""
    import microdot.microdot as m
    m.print_exception = fn


def large_bodies(app, paths, limit):
    """microdot refuses a body over the class-wide Request.max_content_length before any handler
    runs; requests to `paths` of this app may send up to `limit` bytes (their handlers read
    req.stream in slices: a body over max_body_length is never read into memory)."""
    dispatch = app.dispatch_request

    async def dispatch_request(req):
        if req and req.path in paths:
            req.max_content_length = limit
        return await dispatch(req)

    app.dispatch_request = dispatch_request


def host_of(addr):
    """The client's IP address as text, from a peer address as the port's socket gives it: a
    (host, port) tuple on the ESP32, a raw sockaddr_in on the unix port."""
    if isinstance(addr, tuple):
        return addr[0]
    if addr and len(addr) >= 8 and addr[0] == 2:    # AF_INET: port in bytes 2-3, host in 4-7
        return '%d.%d.%d.%d' % (addr[4], addr[5], addr[6], addr[7])
    return '?'
