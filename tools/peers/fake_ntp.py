"""A small SNTP server on 127.0.0.1 for tests and `make sim`: the simulated board sets its clock
from it, so nothing reaches the Internet's NTP servers.

It answers each request (RFC 4330: version 4, mode 4, stratum 2) with this PC's time plus
`offset` seconds. Tests script misbehaviour: `silent` answers nothing; `bad` lists forged replies
sent before the genuine one (or instead of it when `genuine` is False), each wrong in one way a
LAN attacker could try: another request's origin stamp, stratum 0 (kiss-o'-death), a client-mode
packet, a zero transmit time, an unsynchronised server (leap 3), a short packet.

    python tools/peers/fake_ntp.py --port 12300 [--offset SECONDS]
"""
import argparse
import calendar
import socket
import struct
import threading
import time

NTP_TO_UNIX = 2208988800
FORGED_YEAR = 2031       # the time every forged reply claims (tests check it is never taken)
BAD = ('origin', 'stratum0', 'mode3', 'zero_time', 'leap3', 'short')


def ntp_stamp(unix_s):
    secs = int(unix_s)
    return struct.pack('>II', (secs + NTP_TO_UNIX) & 0xFFFFFFFF, int((unix_s - secs) * 2 ** 32))


def reply(request, unix_s, leap=0, mode=4, stratum=2, origin=None, transmit=None):
    """A server reply to `request` (48 bytes) carrying `unix_s`."""
    stamp = ntp_stamp(unix_s)
    return (bytes([(leap << 6) | (4 << 3) | mode, stratum, 6, 0xEC]) + bytes(8) + b'LOCL'
            + stamp + (request[40:48] if origin is None else origin) + stamp
            + (stamp if transmit is None else transmit))


def forged(kind, request):
    """A reply wrong in the way `kind` names (one of BAD), claiming FORGED_YEAR."""
    t = calendar.timegm((FORGED_YEAR, 6, 1, 12, 0, 0))
    if kind == 'origin':
        return reply(request, t, origin=b'\x01' * 8)
    if kind == 'stratum0':
        return reply(request, t, stratum=0)
    if kind == 'mode3':
        return reply(request, t, mode=3)
    if kind == 'zero_time':
        return reply(request, t, transmit=bytes(8))
    if kind == 'leap3':
        return reply(request, t, leap=3)
    if kind == 'short':
        return reply(request, t)[:40]
    raise ValueError(kind)


class FakeNtp:
    def __init__(self, host='127.0.0.1', port=0, offset=0.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.offset = offset
        self.silent = False
        self.bad = []           # forged replies sent first, in this order (kinds from BAD)
        self.genuine = True     # then the genuine reply
        self.requests = 0
        self.answered = 0
        self._stop = False
        self._thread = None

    @property
    def address(self):
        return '127.0.0.1:%d' % self.port

    def start(self):
        self._thread = threading.Thread(target=self._serve, name='fake-ntp', daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop = True
        if self._thread:
            self._thread.join(2)
        self.sock.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _serve(self):
        while not self._stop:
            try:
                req, peer = self.sock.recvfrom(512)
            except socket.timeout:
                continue
            except OSError:
                return
            self.requests += 1
            if self.silent or len(req) < 48 or req[0] & 7 != 3:
                continue
            try:
                for kind in list(self.bad):
                    self.sock.sendto(forged(kind, req), peer)
                if self.genuine:
                    self.sock.sendto(reply(req, time.time() + self.offset), peer)
                    self.answered += 1
            except OSError:
                pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--host', default='127.0.0.1')
    ap.add_argument('--port', type=int, default=12300)
    ap.add_argument('--offset', type=float, default=0.0, help='seconds added to this PC\'s time')
    a = ap.parse_args()
    srv = FakeNtp(a.host, a.port, a.offset).start()
    print('fake NTP on %s:%d' % (a.host, srv.port), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.stop()


if __name__ == '__main__':
    main()
