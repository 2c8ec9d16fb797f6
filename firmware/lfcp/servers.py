"""One management server as the device sees it: its address, the replies it owes, its liveness,
and the plain-mode memory that keeps a re-delivered command from running twice."""
import time

RAN = 4  # plain commands remembered per server
PENDING = 16  # unanswered reports remembered per server (a LOG burst must not push out a heartbeat)


def same_host(a, b):
    """Whether two socket addresses share the IP: tuples on the board, raw sockaddrs on the unix
    port (compared in place: this runs for every datagram, a flood must not allocate)."""
    if isinstance(a, tuple):
        return a[0] == b[0]
    return a[4] == b[4] and a[5] == b[5] and a[6] == b[6] and a[7] == b[7]


class Server:
    def __init__(self, spec):
        host, port = spec.rsplit(':', 1)
        self.spec = spec
        self.host = host
        self.port = int(port)
        self.addr = None
        self.resolved = 0
        self.retry = 0
        self.pending = [None] * PENDING  # None marks a free slot: no seq value is special
        self.slot = 0
        self.plain_wait = 0  # legacy: plain replies still owed
        self.last = None  # ticks_ms of the last valid reply
        self.state = 'unknown'
        self.next_hb = 0
        self.sent = 0
        self.replies = 0
        # plain commands carry no id: the last RAN run, each [key, ticks_ms, moved_on]; moved_on
        # once the server answered with anything else (then it has seen the ACK)
        self.ran = []

    def sends_from(self, addr, rule):
        """Whether a datagram from addr may be this server's, under lfcp.reply_from."""
        if self.addr is None:
            return False
        if addr == self.addr:
            return True
        return rule == 'any' or (rule == 'host' and same_host(addr, self.addr))

    def expect(self, seq):
        self.pending[self.slot] = seq
        self.slot = (self.slot + 1) % PENDING

    def owes(self, seq):
        return seq in self.pending

    def claim(self, seq):
        """True once for a seq this server owes a reply to."""
        p = self.pending
        for i in range(PENDING):
            if p[i] == seq:
                p[i] = None
                return True
        return False

    def heard(self, now):
        self.last = now
        self.replies += 1

    def plain_repeat(self, key, window_ms, now):
        """A plain command without id: True when it repeats one run lately, delivered again
        because the server had not seen the ACK yet, or a late copy within the window."""
        hit = None
        for e in self.ran:
            if e[0] == key:
                hit = e
            else:
                e[2] = True
        if hit is None:
            return False
        return not hit[2] or time.ticks_diff(now, hit[1]) < window_ms

    def plain_ran(self, key, now):
        self.ran.append([key, now, False])
        if len(self.ran) > RAN:
            self.ran.pop(0)

    def plain_other(self):
        """The server answered with something other than a command: it has moved on."""
        for e in self.ran:
            e[2] = True
