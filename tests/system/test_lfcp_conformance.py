"""LFCP conformance: the device (the LFCP service on the VM, tools/testkit/vm/lfcp_driver.py)
against servers written here from docs/protocol.md alone, deliberately naive: each answers every
device message except ACK with its oldest un-ACKed command, else with `ACK,<type answered>` (p7 =
the id the message carried); an ACK naming the head command (its type; authenticated, its id)
takes it off the queue; a MOAL is recorded once per alarm id. Half the runs are plain (legacy
mode, commands without id), half authenticated (answers carry the seq they answer, commands ids).

Kinds: naive (answers at once), late (every answer 0.3..0.7 s late), reordering (answers held
and sent in shuffled batches), lossy (seeded random drop both ways and duplicated answers).
Every run has two servers at once, of kinds chosen by the seed, with every command type split
between them, two alarms, and a reboot or deep sleep last (the device is started again, and a
re-delivery after it must not run). Counted: each command ran exactly once (TLGC: never in
plain mode), each alarm recorded exactly once at each server and acknowledged by it."""
import random
import socket
import threading
import time

import pytest
from testkit.vm.lfcp_harness import KEY, Device, wait

from firmware.lfcp import codec as lfcp

pytestmark = pytest.mark.timeout(240)

KINDS = ('naive', 'late', 'reordering', 'lossy')
LOSS = 0.2  # the lossy server's chance to drop a datagram (each way) and to send an answer twice
# An alarm copy gets through with (1 - LOSS)^2; copies leave at 0, 1, 3, 7, 15, 31, 61 s, so
# waiting 75 s for the acknowledgement fails once in ~10^4 alarms: a bound, not a margin
ALARM_WAIT = 75
RUNS = {'ENAL': 'arm', 'DSAL': 'disarm', 'TLGS': 'photo', 'WCAM': 'camera_on',
        'SCAM': 'camera_off', 'STAT': 'status', 'UPOP': 'open', 'UPCL': 'close',
        'TLGC': 'telegram_set', 'RST': 'reboot', 'DSLP': 'sleep'}


def build(name, typ, params=()):
    f = [name, typ] + [str(p) for p in params]
    return ','.join(f + ['0'] * (8 - len(f))).encode()


def parse(data):
    f = data.decode('ascii', 'replace').split(',')
    return f if len(f) == 8 and len(data) <= 128 else None


class PlainServer:
    """key None: plain LFCP. With a key: the same naive server speaking the authenticated form
    (answers carry the seq they answer, commands carry ids), for the exactly-once rule by id."""

    def __init__(self, kind, rng, commands, key=None):
        self.kind = kind
        self.rng = rng
        self.key = key
        self.ids = 1732233000000
        self.queue = [self._command(c) for c in commands]
        self.acked = []
        self.alarms = {}  # alarm id -> MOAL datagrams received
        self.held = []
        self.trace = []  # (time, '<' received | '>' sent, datagram): shown when a run fails
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(('127.0.0.1', 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _command(self, text):
        c = text.split('/')
        if self.key:  # p2..p6, then the id in p7
            self.ids += 1
            c = c + ['0'] * (6 - len(c)) + [str(self.ids)]
        return c

    def add(self, text):
        with self.lock:
            self.queue.append(self._command(text))

    def _lost(self):
        return self.kind == 'lossy' and self.rng.random() < LOSS

    def _run(self):
        while self.running:
            try:
                data, addr = self.sock.recvfrom(512)
            except socket.timeout:
                self._flush()
                continue
            except OSError:
                return
            self.trace.append((round(time.monotonic() % 1000, 3), '<', data))
            seq = None
            if self.key:
                try:
                    f, seq = lfcp.decode(data, self.key)
                except lfcp.LfcpError:
                    f = None
            else:
                f = parse(data)
            if f is None or self._lost():
                continue
            with self.lock:
                answer = self._on(f, seq)
            if answer:
                self._answer(answer, addr)
            self._flush()

    def _on(self, f, seq):
        name, typ = f[0], f[1]
        if typ == 'ACK':
            head = self.queue[0] if self.queue else None
            if head and f[2] == head[0] and (not self.key or f[7] == head[-1]):
                self.acked.append(self.queue.pop(0)[0])
            return None
        if typ == 'MOAL':
            self.alarms[f[7]] = self.alarms.get(f[7], 0) + 1
        typ, params = ((self.queue[0][0], self.queue[0][1:]) if self.queue
                       else ('ACK', (typ, 0, 0, 0, 0, f[7])))
        if self.key:
            return lfcp.encode(name, typ, params, seq, self.key, lfcp.DOWN)
        return build(name, typ, params)

    def _answer(self, data, addr):
        if self._lost():
            return
        n = 2 if self.kind == 'lossy' and self.rng.random() < LOSS else 1
        now = time.monotonic()
        for _ in range(n):
            if self.kind == 'late':
                self.held.append((now + 0.3 + 0.4 * self.rng.random(), data, addr))
            elif self.kind == 'reordering':
                self.held.append((now + 0.3, data, addr))
            else:
                self._out(data, addr)

    def _out(self, data, addr):
        self.trace.append((round(time.monotonic() % 1000, 3), '>', data))
        self.sock.sendto(data, addr)

    def _flush(self):
        now = time.monotonic()
        due = [h for h in self.held if h[0] <= now]
        if not due:
            return
        self.held = [h for h in self.held if h[0] > now]
        if self.kind == 'reordering':
            self.rng.shuffle(due)
        for _, data, addr in due:
            self._out(data, addr)

    def done(self):
        with self.lock:
            return not self.queue

    def close(self):
        self.running = False
        self.thread.join(5)  # it stops within one 50 ms receive timeout
        self.sock.close()


@pytest.mark.parametrize('seed', range(20))
def test_every_command_runs_once_and_every_alarm_arrives_once(seed, tmp_path):
    rng = random.Random(seed)
    down = 'RST' if seed % 2 else 'DSLP/5'
    auth = seed % 4 in (1, 2)  # a quarter of the runs each: plain/auth x reboot/deep sleep
    key = lfcp.Hmac(KEY) if auth else None
    a = PlainServer(KINDS[seed % 4], random.Random(seed * 2 + 1),
                    ['ENAL', 'TLGS', 'WCAM', 'STAT', 'UPOP'], key)
    b = PlainServer(KINDS[(seed // 4 + seed + 1) % 4], random.Random(seed * 2 + 2),
                    ['DSAL', 'SCAM', 'UPCL', 'TLGC/123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/42'],
                    key)
    d = Device(tmp_path, {'legacy': not auth, 'key': KEY if auth else '', 'heartbeat_s': 1,
                          'unreachable_after_s': 5, 'alarm_deadline_s': 600,
                          'servers': ['127.0.0.1:%d' % a.port, '127.0.0.1:%d' % b.port]})
    lines = []
    try:
        d.start()
        time.sleep(rng.random() / 2)
        wait(lambda: a.done() and b.done(), 40, 'every command ACKed')
        # a naive server answers a MOAL with its oldest command while it has one: the alarm is
        # raised once the queues are empty, so its copies are not spent waiting for them
        ids = [d.control('alarm esp32_cam_motion_detected')]
        wait(lambda: d.status()['alarms_pending'] == 0, ALARM_WAIT, 'the first alarm acknowledged')
        a.add(down)
        wait(lambda: d.exited() is not None, 30, 'the reboot or deep sleep')
        wait(lambda: [ln for ln in d.lines if ln.startswith('DOWN ')], 5, 'its last line read')
        lines += d.lines
        d.start()  # the board comes back; a re-delivered RST/DSLP must only be ACKed
        wait(lambda: a.done(), 30, 'the %s ACKed' % down)
        ids.append(d.control('alarm esp32_cam_motion_detected'))
        wait(lambda: d.status()['alarms_pending'] == 0, ALARM_WAIT, 'the second alarm acknowledged')
        lines += d.lines
        runs = dict((n, sum(1 for ln in lines if ln.startswith('RUN %s ' % n)))
                    for n in RUNS.values())
        want = dict((n, 0 if n == 'telegram_set' and not auth else 1) for n in RUNS.values())
        want['reboot' if down == 'RST' else 'sleep'] = 1
        want['sleep' if down == 'RST' else 'reboot'] = 0
        assert runs == want, (auth, a.kind, b.kind, runs, a.trace, b.trace)
        assert sorted(a.acked + b.acked) == sorted(c.split('/')[0] for c in (
            'ENAL', 'TLGS', 'WCAM', 'STAT', 'UPOP', down, 'DSAL', 'SCAM', 'UPCL', 'TLGC'))
        for s in (a, b):  # each alarm recorded once per id, at each server
            assert sorted(s.alarms) == sorted(ids), (s.kind, s.alarms, ids)
        assert d.status()['alarms_acknowledged'] == 1
    finally:
        d.stop()
        a.close()
        b.close()
