# Simulator stand-in for the ESP32 port's `socket` module (runs inside the MicroPython unix VM):
# the VM's own sockets, with lwIP's limits. See docs/simulator.md, "`socket`: lwIP's buffers
# and socket count".
#
# - Buffers: every TCP socket gets lwIP's send buffer and window (CONFIG_LWIP_TCP_SND_BUF_DEFAULT,
#   CONFIG_LWIP_TCP_WND_DEFAULT: 5760 bytes in ESP-IDF 5), instead of the megabytes Linux
#   autotunes on loopback; a write takes at most one send buffer, as lwip_send() does.
# - Count: a board has CONFIG_LWIP_MAX_SOCKETS sockets for everything (listeners, connections,
#   UDP). socket() beyond it raises OSError(ENFILE) after one gc.collect() (as the ESP32 port's
#   socket_make_new does); accept() beyond it closes the new connection and raises
#   OSError(ENFILE), as lwip_accept() does (netconn_delete: the client sees it closed).
# - Faults: $ESP32SIM/lwip.json {"max_sockets": n} changes the count while the board runs;
#   {"nomem_accept_port": p, "nomem_accept_count": n} makes the next n accept()s on port p raise
#   MemoryError where the VM allocates the new socket object, after the stack accepted the
#   connection: it is left open and unowned, as on the board (the socket leaks).
#
# The module is found on MICROPYPATH before the VM's built-in `socket` (an extensible module),
# so the firmware, microdot and asyncio all get it; the built-in is loaded below.
import gc
import io
import os
import sys

import simstate as _s


def _builtin():
    me = sys.modules.pop('socket', None)
    path = sys.path[:]
    sys.path.clear()           # no file on the path: the import finds the built-in module
    try:
        import socket as real
    finally:
        sys.path.extend(path)
        if me is not None:
            sys.modules['socket'] = me
    return real


_n = _builtin()
for _k in dir(_n):
    if _k[0] != '_' and _k != 'socket':
        globals()[_k] = getattr(_n, _k)

ENFILE = 23                     # newlib's ENFILE, what lwIP sets when its socket table is full
SND_BUF = 5760                  # CONFIG_LWIP_TCP_SND_BUF_DEFAULT (4 x TCP_MSS 1440)
TCP_WND = 5760                  # CONFIG_LWIP_TCP_WND_DEFAULT
MAX_SOCKETS = int(os.getenv('SIM_LWIP_MAX_SOCKETS') or 16)
_SO_SNDBUF = 7                  # Linux numbers (the VM's socket module does not name them)
_SO_RCVBUF = 8
_S_IFSOCK = 0o140000
_ctl = []
_adopt = []
_count = [0]                    # sockets this VM holds (an upper bound, see _full)
_leaked = []                    # sockets whose object could not be allocated (board: lost)


def _control():
    if not _ctl:
        # a VM run without the simulator's control directory (a test driver) has no faults
        _ctl.append(_s.Watched('lwip.json', {}, every_ms=200) if os.getenv('ESP32SIM') else None)
    return _ctl[0].get() if _ctl[0] else {}


def _limit():
    return int(_control().get('max_sockets', MAX_SOCKETS))


def open_sockets():
    """Sockets open in this VM now (the kernel's view: closed or collected ones are gone)."""
    n = 0
    for e in os.ilistdir('/proc/self/fd'):
        try:
            if os.stat('/proc/self/fd/' + e[0])[0] & 0o170000 == _S_IFSOCK:
                n += 1
        except OSError:
            pass                # the directory's own descriptor, already closed
    return n


def _full(extra):
    """True when the board's table has no socket left (`extra`: one just taken by accept).
    The running count misses sockets closed by their finaliser, so it can only be too high:
    at the limit the kernel's count decides (a scan costs ~0.2 ms, a flood would feel it)."""
    limit = _limit()
    if _count[0] - extra < limit:
        return False
    _count[0] = open_sockets()
    return _count[0] - extra >= limit


def _board_sized(s):
    # Linux doubles the value asked for (room for its own bookkeeping): half of lwIP's send
    # buffer gives a send queue of 5760 bytes; of a receive buffer it offers about 3/4 as
    # window, so 2/3 of lwIP's window holds 5760 unread bytes (measured: docs/simulator.md).
    s.setsockopt(SOL_SOCKET, _SO_SNDBUF, SND_BUF // 2)
    s.setsockopt(SOL_SOCKET, _SO_RCVBUF, TCP_WND * 2 // 3)


class socket(io.IOBase):
    # io.IOBase: select.poll and TLS reach the real socket through ioctl() (its file number).
    # One attribute per socket (the real one): the wrapper's heap is the VM's, not the board's.
    _port = None                # set by bind(): the port a listener's accept faults apply to

    def __init__(self, af=AF_INET, type=SOCK_STREAM, proto=0):
        if _adopt:
            self._s = _adopt.pop()  # a connection accept() took
            return
        if _full(0):
            gc.collect()        # unreferenced sockets are closed by their finaliser
            if _full(0):
                raise OSError(ENFILE)
        s = _n.socket(af, type, proto)
        _count[0] += 1
        if type == SOCK_STREAM:
            _board_sized(s)
        self._s = s

    def __repr__(self):
        return '<socket %d>' % self._s.fileno()

    def accept(self):
        s, addr = self._s.accept()
        c = _control()
        if c.get('nomem_accept_count', 0) > 0 and c.get('nomem_accept_port') == self._port:
            _ctl[0].put('nomem_accept_count', c['nomem_accept_count'] - 1)
            _leaked.append(s)   # accepted by the stack, but no heap for the object
            _count[0] += 1
            raise MemoryError('memory allocation failed, allocating 48 bytes')
        _count[0] += 1
        if _full(1):
            s.close()
            _count[0] -= 1
            raise OSError(ENFILE)
        _adopt.append(s)
        return socket(), addr

    def write(self, buf, *args):
        if not args and len(buf) > SND_BUF:
            return self._s.write(buf, SND_BUF)      # lwip_send takes what the buffer holds
        return self._s.write(buf, *args)

    def send(self, buf):
        if len(buf) > SND_BUF:
            buf = memoryview(buf)[:SND_BUF]
        return self._s.send(buf)

    def ioctl(self, req, arg):
        if req == 10:           # MP_STREAM_GET_FILENO: poll waits on the real descriptor
            return self._s.fileno()
        if req == 4:            # MP_STREAM_CLOSE (a TLS socket closing its transport)
            self.close()
            return 0
        return -22

    def close(self):
        if self._s.fileno() >= 0:
            _count[0] -= 1
        self._s.close()

    def fileno(self):
        return self._s.fileno()

    def bind(self, addr):
        if isinstance(addr, (bytes, bytearray)) and len(addr) >= 4:
            self._port = addr[2] << 8 | addr[3]    # a raw sockaddr_in on the unix port
        return self._s.bind(addr)

    def listen(self, *backlog):
        return self._s.listen(*backlog)

    def connect(self, addr):
        return self._s.connect(addr)

    def setblocking(self, flag):
        return self._s.setblocking(flag)

    def settimeout(self, t):
        return self._s.settimeout(t)

    def setsockopt(self, level, opt, value):
        return self._s.setsockopt(level, opt, value)

    def sendall(self, buf):
        return self._s.sendall(buf)

    def sendto(self, buf, addr):
        return self._s.sendto(buf, addr)

    def recv(self, n):
        return self._s.recv(n)

    def recvfrom(self, n):
        return self._s.recvfrom(n)

    def read(self, *n):
        return self._s.read(*n)

    def readinto(self, buf, *n):
        return self._s.readinto(buf, *n)

    def readline(self, *n):
        return self._s.readline(*n)

    def makefile(self, *args, **kw):
        return self
