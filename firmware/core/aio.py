"""The one place that reaches into asyncio's and microdot's internals.

MicroPython's asyncio has no public "wait until this socket is readable/writable" (only Stream,
which copies what the socket does not take at once), and microdot keeps the connection's stream
in `req.sock` and prints a traceback per unparseable request. The firmware needs all three (a
frame written from memory, UDP and raw TLS sockets on the loop, a quiet console), so they live
here: an asyncio or microdot upgrade is checked against this file alone.

The servers also accept their own connections (`listen`, `accept`): asyncio's start_server runs
its accept loop in a task of its own that dies for good on the first MemoryError, and it creates
a task and a Stream for every connection before anyone can refuse it.
"""
import asyncio
import socket


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
    """Write all of `buf` to the stream's socket without copying it; OSError on failure.
    Writes first and waits for the poller only when the socket is full: a poll round per write
    was most of a frame's cost when lwIP's 5760-byte buffer takes a VGA frame in six writes."""
    sock = stream.s
    mv = memoryview(buf)
    off = 0
    n = len(buf)
    io = asyncio.core._io_queue
    while off < n:
        w = sock.write(mv[off:] if off else mv)
        if w is None:
            yield io.queue_write(sock)  # in place: no waiter object per write on the frame path
            continue
        if w <= 0:
            raise OSError(104)
        off += w


def room_poll(stream):
    """A poller for `has_room`, made once per connection (not per frame)."""
    import select
    p = select.poll()
    p.register(stream.s, select.POLLOUT)
    return p


def has_room(poller):
    """True when the socket has room by the poller's measure: at least half of its send buffer
    free (lwIP's TCP_SNDLOWAT; Linux: a third), what it held has gone out. Asked without a round
    of the scheduler; ipoll reuses its result tuple, so nothing is allocated."""
    for _ in poller.ipoll(0):
        return True
    return False


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


def listen(host, port, backlog):
    """A non-blocking listening TCP socket (errors, e.g. the port in use, raise here, at boot)."""
    ai = socket.getaddrinfo(host, port)[0]
    s = socket.socket()
    s.setblocking(False)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(ai[-1])
    s.listen(backlog)
    return s


def free_sockets(most=32):
    """How many sockets the network stack would give now (a stock ESP32 image has 10 in all,
    lwIP's default): opened until it refuses, then closed."""
    held = []
    try:
        while len(held) < most:
            held.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    except OSError:
        pass
    for s in held:
        s.close()
    return len(held)


async def accept(lsock):
    """The next connection: (socket, peer address). OSError when accept itself fails (no
    socket left, say): the caller counts it and goes on."""
    yield asyncio.core._io_queue.queue_read(lsock)
    s, addr = lsock.accept()
    s.setblocking(False)
    return s, addr


def stream(s, addr):
    """The asyncio Stream a microdot app reads a request from and writes its answer to."""
    return asyncio.StreamWriter(s, {'peername': addr})


class Reader:
    """The request side of a connection, for microdot: `reading` stays True until the blank line
    that ends the headers, so the server can tell a connection still sending its request (an
    idle one holds one of a board's 10-16 sockets) from one being answered."""

    def __init__(self, stream):
        self.s = stream
        self.reading = True

    async def readline(self):
        line = await self.s.readline()
        if line in (b'\r\n', b'\n', b''):
            self.reading = False
        return line

    async def readexactly(self, n):
        return await self.s.readexactly(n)

    async def read(self, n=-1):
        return await self.s.read(n)

    async def readinto(self, buf):
        return await self.s.readinto(buf)


def refuse(s, text):
    """Answer a connection refused at accept with a short HTTP text, without waiting: the
    socket's buffer takes a few hundred bytes at once, and a client that reads nothing loses
    nothing but this. What the client sent already is read first: closing with unread bytes
    resets the connection (lwIP and Linux alike), and a reset can overtake the answer."""
    try:
        for _ in range(8):          # a request head; a flood is not read to its end
            if not s.read(256):
                break
    except OSError:
        pass
    try:
        s.write(text)
    except OSError:
        pass
    s.close()


def host_of(addr):
    """The client's IP address as text, from a peer address as the port's socket gives it: a
    (host, port) tuple on the ESP32, a raw sockaddr_in on the unix port."""
    if isinstance(addr, tuple):
        return addr[0]
    if addr and len(addr) >= 8 and addr[0] == 2:    # AF_INET: port in bytes 2-3, host in 4-7
        return '%d.%d.%d.%d' % (addr[4], addr[5], addr[6], addr[7])
    return '?'
