"""LFCP device service: heartbeats to the management servers, their commands, alarms, LOG lines.

One UDP socket on lfcp.port. Each HEARTBEAT opens the NAT mapping the server's reply comes back
through. An authenticated reply must carry the seq of a report this device sent and has not seen
answered, so a reply replayed later is refused; the device's own seq survives reboots through a
high-water mark reserved in blocks, so flash is written once per SEQ_BLOCK messages, not per
packet. Messages whose seq answers nothing are direct commands from the LAN: their seq must be
above everything the device ever sent and above the last direct seq accepted (kept in flash).
Commands go through the command layer, in order, each id once. docs/protocol.md has the rules.
"""
import asyncio
import socket
import time

from firmware.core import commands, store
from firmware.core.aio import readable
from firmware.core.commands import CommandError
from firmware.core.events import ARMED, MANAGEMENT, UPLINK
from firmware.lfcp import codec as lfcp

STATE = 'lfcp.json'
SEQ_BLOCK = 1000
PENDING = 16  # unanswered reports remembered per server (a LOG burst must not push out a heartbeat)
DONE = 4  # executed command ids remembered per origin
QUEUE = 4  # commands waiting for the worker
ALARMS = 4  # alarms being retransmitted at once
SOURCES = 16  # addresses the rate limiter tracks
LOG_QUEUE = 8
LOG_EVERY_MS = 2000  # LOG lines sent at most this often on average (burst LOG_QUEUE)
TICK_MS = 250
DSLP_DEFAULT_S = 60  # the original's TIME_TO_SLEEP
EAGAIN = 11

# LFCP command -> command layer name; the original's LOG text is "<stem>_request_via_<source>"
CMD = commands.by_lfcp()
LOG_STEM = dict((c[commands.NAME], c[commands.LOG]) for c in commands.TABLE if c[commands.LOG])
REJECTS = ('oversized', 'fields', 'malformed', 'bad_mac', 'name', 'unknown', 'replay', 'plain',
           'unsolicited', 'rate')


class Server:
    """One management server: its address, the reports it still owes a reply, its liveness."""

    def __init__(self, spec):
        host, port = spec.rsplit(':', 1)
        self.spec = spec
        self.host = host
        self.port = int(port)
        self.addr = None
        self.resolved = 0
        self.retry = 0
        self.pending = [0] * PENDING
        self.slot = 0
        self.plain_wait = 0  # legacy: plain replies still owed
        self.last = None  # ticks_ms of the last valid reply
        self.state = 'unknown'
        self.next_hb = 0
        self.sent = 0
        self.replies = 0

    def expect(self, seq):
        self.pending[self.slot] = seq
        self.slot = (self.slot + 1) % PENDING

    def claim(self, seq):
        """True once for a seq this server owes a reply to."""
        p = self.pending
        for i in range(PENDING):
            if p[i] == seq:
                p[i] = 0
                return True
        return False


class Alarm:
    def __init__(self, aid, text, n, now):
        self.id = aid
        self.text = text
        self.start = now
        self.acked = [False] * n
        self.seq = [0] * n
        self.due = [now] * n
        self.delay = [1000] * n


class Management:
    def __init__(self, cfg, log, bus, commands, bind='0.0.0.0', state_path=STATE, beat=None):
        c = cfg.lfcp
        self.cfg = c
        self.name = cfg.device.name
        self.log = log
        self.bus = bus
        self.commands = commands
        self.bind = bind
        self.path = state_path
        self.beat = beat
        self.key = lfcp.Hmac(c.key) if c.key else None
        if c.key:
            log.secret(c.key)
        self.legacy = c.legacy
        self.enabled = bool(c.key) or c.legacy
        self.servers = [Server(s) for s in c.servers]
        self.sock = None
        self.seq = 0
        self.reserved = 0
        self.direct_hw = 0
        self.done = {}
        self.queue = []
        self.wake = asyncio.Event()
        self.alarms = []
        self.logq = []
        self._log_tokens = LOG_QUEUE * LOG_EVERY_MS
        self._log_at = time.ticks_ms()
        self._in_sink = False
        self._buckets = {}
        self.armed = False
        self.up = None
        self.uplink = None  # False while Wi-Fi has no upstream: heartbeats wait for it
        self.started = time.ticks_ms()
        self.rejected = dict((k, 0) for k in REJECTS)
        self.stats = {'sent': 0, 'received': 0, 'commands': 0, 'duplicates': 0,
                      'send_errors': 0, 'errors': 0, 'logs_dropped': 0}
        bus.on(ARMED, self._on_armed)
        bus.on(UPLINK, self._on_uplink)

    # --- life cycle -------------------------------------------------------------------------

    async def run(self):
        if not self.enabled:
            self.log.warn('lfcp: off: set lfcp.key (or lfcp.legacy for plain servers)')
            return
        if self.legacy:
            self.log.warn('lfcp: legacy mode: plain LFCP to the servers, TLGC refused')
        self._load()
        self._open()
        self.started = time.ticks_ms()
        self.log('lfcp: port', self.cfg.port, 'servers', ' '.join(s.spec for s in self.servers))
        rx = asyncio.create_task(self._rx())
        wk = asyncio.create_task(self._worker())
        try:
            await self._tick()
        finally:
            rx.cancel()
            wk.cancel()
            self._close()

    def _open(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(socket.getaddrinfo(self.bind, self.cfg.port)[0][-1])
            s.setblocking(False)
        except OSError:
            s.close()
            raise
        self.sock = s

    def _close(self):
        if self.sock:
            self.sock.close()
            self.sock = None

    def _load(self):
        try:
            st = store.load(self.path, {}) or {}
        except ValueError as e:
            self.log.error('lfcp:', e)
            st = {}
        self.seq = st.get('seq', 0)
        self.direct_hw = st.get('direct', 0)
        keep = [s.spec for s in self.servers] + ['direct']
        done = st.get('done', {})
        self.done = dict((k, done[k]) for k in done if k in keep)
        self._reserve()

    def _save(self):
        try:
            store.save(self.path, {'seq': self.reserved, 'direct': self.direct_hw,
                                   'done': self.done})
        except OSError as e:
            if not self._in_sink:
                self.log.error('lfcp: cannot save', self.path, e)

    def _reserve(self):
        self.reserved = self.seq + SEQ_BLOCK
        self._save()

    def _next_seq(self):
        self.seq += 1
        if self.seq >= self.reserved:
            self._reserve()
        return self.seq

    # --- the loops --------------------------------------------------------------------------

    async def _tick(self):
        hb = self.cfg.heartbeat_s * 1000
        failing = False
        while True:
            try:
                now = time.ticks_ms()
                for s in self.servers if self.uplink is not False else ():
                    if s.addr is None or (s.state == 'unreachable'
                                          and time.ticks_diff(now, s.resolved) > 300000):
                        self._resolve(s, now)
                    if s.addr is not None and time.ticks_diff(now, s.next_hb) >= 0:
                        s.next_hb = time.ticks_add(now, hb)
                        self._send(s, 'HEARTBEAT', (1 if self.armed else 0,))
                self._liveness(now)
                self._alarm_tick(now)
                self._flush_logs()
                failing = False
            except Exception as e:  # keep the heartbeats going; say it once
                self.stats['errors'] += 1
                if not failing:
                    self.log.error('lfcp: tick:', repr(e))
                failing = True
            if self.beat:
                self.beat()
            await asyncio.sleep_ms(TICK_MS)

    def _resolve(self, s, now):
        if s.retry and time.ticks_diff(now, s.retry) < 0:
            return
        try:  # blocks while DNS answers: once per server, again only after a long outage
            a = socket.getaddrinfo(s.host, s.port)[0][-1]
            s.addr = bytes(a) if isinstance(a, bytearray) else a  # unix port: raw sockaddr
            s.resolved = now
            s.retry = 0
        except OSError as e:
            s.retry = time.ticks_add(now, 30000)
            self.log.warn('lfcp: cannot resolve', s.host, e)

    async def _rx(self):
        sock = self.sock
        while True:
            await readable(sock)
            for _ in range(16):  # drain a burst, then let the other tasks run
                try:
                    data, addr = sock.recvfrom(lfcp.MAX_AUTH + 1)
                except OSError as e:
                    if e.args[0] != EAGAIN:
                        self.stats['errors'] += 1
                    break
                try:
                    self._handle(data, addr)
                except Exception as e:  # a bad datagram never kills the receiver
                    self.stats['errors'] += 1
                    self.log.error('lfcp: rx:', repr(e))
            await asyncio.sleep_ms(0)

    async def _worker(self):
        """Runs accepted commands one at a time, in arrival order; ERR when one fails."""
        while True:
            if not self.queue:
                self.wake.clear()
                await self.wake.wait()
                continue
            origin, typ, cid, args = self.queue.pop(0)
            self._save()  # the id is done (and a direct seq used) before the command starts
            if typ in ('RST', 'DSLP'):
                self._flush_logs()
                await asyncio.sleep_ms(300)  # the ACK leaves before the device goes down
            try:
                text = await self.commands.run(CMD[typ], args, 'lfcp')
            except CommandError as e:
                self._send(origin, 'ERR', (self._reason(e), typ, 0, 0, 0, cid))
                continue
            if typ == 'STAT':
                self._send(origin, 'STAT', (self.log.redact(str(text)), 0, 0, 0, 0, cid))

    def _reason(self, e):
        return self.log.redact(str(e.args[0]) if e.args else 'failed')

    # --- receiving --------------------------------------------------------------------------

    def _handle(self, data, addr):
        self.stats['received'] += 1
        if not self._allow(addr):
            self.rejected['rate'] += 1
            return
        try:
            f, seq = lfcp.decode(data, self.key)
        except lfcp.LfcpError as e:
            self.rejected[e.kind] += 1
            if e.auth and e.seq is not None:
                origin = self._origin(e.seq, addr)
                if origin is not None:
                    self._send(origin, 'ERR', (e.kind, e.fields[1], 0, 0, 0, e.fields[7]))
            return
        if seq is None:
            return self._plain(f, addr)
        origin = self._origin(seq, addr)
        if origin is None:
            return
        if f[0] != self.name:
            self.rejected['name'] += 1
            self._send(origin, 'ERR', ('wrong_name', f[1], 0, 0, 0, f[7]))
            return
        self._message(origin, f, True)

    def _origin(self, seq, addr):
        """The server whose report seq answers, else addr for a fresh direct command, else None."""
        for i in range(len(self.servers)):
            s = self.servers[i]
            if s.claim(seq):
                self._heard(i, seq)
                return s
        if seq <= self.direct_hw or seq <= self.reserved:
            self.rejected['replay'] += 1
            return None
        self.direct_hw = seq
        return addr

    def _plain(self, f, addr):
        if not self.legacy:
            self.rejected['plain'] += 1
            return
        for i in range(len(self.servers)):
            s = self.servers[i]
            if s.plain_wait and s.addr == addr:
                s.plain_wait -= 1
                self._heard(i, None)
                if f[0] != self.name:
                    self.rejected['name'] += 1
                    return
                return self._message(s, f, False)
        self.rejected['unsolicited'] += 1

    def _heard(self, i, seq):
        s = self.servers[i]
        s.last = time.ticks_ms()
        s.replies += 1
        for a in self.alarms:
            if a.seq[i] and (seq is None or a.seq[i] == seq):
                a.acked[i] = True
        if s.state != 'reachable':
            self._liveness(s.last)

    def _message(self, origin, f, auth):
        typ = f[1]
        if typ == 'ACK':
            return
        if typ not in CMD:
            self.rejected['unknown'] += 1
            if auth:
                self._send(origin, 'ERR', ('unknown_type', typ, 0, 0, 0, f[7]))
            return
        cid = f[7]
        who = origin.spec if isinstance(origin, Server) else 'direct'
        if cid != '0' and self._seen(who, cid):
            self.stats['duplicates'] += 1
            self._send(origin, 'ACK', (typ, 0, 0, 0, 0, cid))
            return
        args, err = self._args(typ, f, auth)
        self._send(origin, 'ACK', (typ, 0, 0, 0, 0, cid))
        if cid != '0':
            ids = self.done.setdefault(who, [])
            ids.append(cid)
            if len(ids) > DONE:
                ids.pop(0)
        if err is None and len(self.queue) >= QUEUE:
            err = 'busy'
        if err:
            self._send(origin, 'ERR', (err, typ, 0, 0, 0, cid))
            return
        self.stats['commands'] += 1
        self.queue.append((origin, typ, cid, args))
        self.wake.set()

    def _seen(self, who, cid):
        return cid in self.done.get(who, ())

    def _args(self, typ, f, auth):
        """Command parameters as command-layer arguments, or an ERR reason."""
        if typ == 'TLGC':
            if not auth:
                return None, 'auth_required'
            token, chat = f[2], f[3]
            if token == '0' or ':' not in token:
                return None, 'bad_token'  # not a token: masking it would garble every log line
            self.log.secret(token)
            try:
                return {'token': token, 'chat_id': int(chat)}, None
            except ValueError:
                return None, 'bad_chat_id'
        if typ in ('DSLP', 'UPOP', 'UPCL'):
            v = f[2]
            if v == '0':  # a plain DSLP sleeps as long as the original did
                return ({'seconds': DSLP_DEFAULT_S} if typ == 'DSLP' else {}), None
            if not v.isdigit() or int(v) < 1 or (typ != 'DSLP' and int(v) > 65535):
                return None, 'bad_parameter'
            return ({'seconds': int(v)} if typ == 'DSLP' else {'port': int(v)}), None
        return {}, None

    def _allow(self, addr):
        """Token bucket per source address: rate_limit datagrams/s, burst rate_limit."""
        now = time.ticks_ms()
        rate = self.cfg.rate_limit
        cap = rate * 1000
        b = self._buckets.get(addr)
        if b is None:
            if len(self._buckets) >= SOURCES:
                for k in list(self._buckets):
                    if time.ticks_diff(now, self._buckets[k][1]) > 1000:
                        del self._buckets[k]
            if len(self._buckets) >= SOURCES:
                addr = None  # too many talkers: the newcomers share one bucket
                b = self._buckets.get(None)
            if b is None:
                b = self._buckets[addr] = [cap, now]
        d = time.ticks_diff(now, b[1])
        t = b[0] + (d if d < 1000 else 1000) * rate
        if t > cap:
            t = cap
        b[1] = now
        if t < 1000:
            b[0] = t
            return False
        b[0] = t - 1000
        return True

    # --- sending ----------------------------------------------------------------------------

    def _send(self, origin, typ, params=()):
        if self.sock is None:
            return 0
        srv = origin if isinstance(origin, Server) else None
        addr = srv.addr if srv else origin
        if addr is None:
            return 0
        seq = 0
        try:
            # encode refuses a message over LFCP's 128 bytes (a long name, reason or command
            # id): a send error, never an exception that ends the caller's task
            if self.key is not None and not (srv and self.legacy):
                seq = self._next_seq()
                data = lfcp.encode(self.name, typ, params, seq, self.key)
            else:
                data = lfcp.encode(self.name, typ, params)
            self.sock.sendto(data, addr)
        except (OSError, ValueError):
            self.stats['send_errors'] += 1
            return 0
        self.stats['sent'] += 1
        if srv:
            srv.sent += 1
            if typ != 'ACK':
                if seq:
                    srv.expect(seq)
                elif srv.plain_wait < PENDING:
                    srv.plain_wait += 1
        return seq or 1

    def _liveness(self, now):
        limit = self.cfg.unreachable_after_s * 1000
        for s in self.servers:
            if s.last is not None and time.ticks_diff(now, s.last) < limit:
                st = 'reachable'
            elif s.last is None and time.ticks_diff(now, self.started) < limit:
                st = 'unknown'
            else:
                st = 'unreachable'
            if st != s.state:
                s.state = st
                if st == 'unreachable':
                    self.log.warn('lfcp: server', s.spec, 'unreachable')
                else:
                    self.log('lfcp: server', s.spec, st)
        if not self.servers:
            return
        states = [s.state for s in self.servers]
        up = True if 'reachable' in states else False if 'unknown' not in states else self.up
        if up is not None and up != self.up:
            self.up = up
            if not up:
                self.log.warn('lfcp: all management servers lost')
            self.bus.emit(MANAGEMENT, up)

    # --- alarms -----------------------------------------------------------------------------

    def alarm(self, text='esp32_cam_motion_detected'):
        """Send MOAL to every server; retransmit with backoff until each answers or
        lfcp.alarm_deadline_s passes. Returns the alarm id (None when LFCP is off)."""
        if not self.enabled or not self.servers:
            return None
        now = time.ticks_ms()
        a = Alarm(self._next_seq(), lfcp.clean(text), len(self.servers), now)
        self.alarms.append(a)
        if len(self.alarms) > ALARMS:
            old = self.alarms.pop(0)
            self.log.warn('lfcp: alarm', old.id, 'dropped: too many alarms pending')
        self._alarm_tick(now)
        return a.id

    def _alarm_tick(self, now):
        deadline = self.cfg.alarm_deadline_s * 1000
        for a in list(self.alarms):
            if False not in a.acked:
                self.alarms.remove(a)
                self.log('lfcp: alarm', a.id, 'acknowledged')
                continue
            if time.ticks_diff(now, a.start) >= deadline:
                self.alarms.remove(a)
                lost = [self.servers[i].spec for i in range(len(a.acked)) if not a.acked[i]]
                self.log.warn('lfcp: alarm', a.id, 'not acknowledged by', ' '.join(lost))
                continue
            for i in range(len(a.acked)):
                if a.acked[i] or time.ticks_diff(now, a.due[i]) < 0:
                    continue
                seq = self._send(self.servers[i], 'MOAL', (a.text, 0, 0, 0, 0, a.id))
                if seq:
                    a.seq[i] = seq
                a.due[i] = time.ticks_add(now, a.delay[i])
                a.delay[i] = min(a.delay[i] * 2, 30000)

    # --- LOG lines --------------------------------------------------------------------------

    def log_sink(self, level, line):
        """Log sink: command lines become the original's LOG texts; warnings and errors too."""
        if self._in_sink:
            return
        p = line.split(' ')
        if len(p) == 4 and p[0] == 'command' and p[2] == 'from':
            if p[1] == 'sleep':
                text = 'device_going_to_deep_sleep'
            else:
                text = LOG_STEM.get(p[1], p[1]) + '_request_via_' + p[3]
        elif level in ('W', 'E'):
            text = level + '_' + line
        else:
            return
        self.report(text)

    def report(self, text):
        """Queue one LOG text for every server (e.g. 'CAMERA_MOTION_DETECTED')."""
        if len(self.logq) >= LOG_QUEUE:
            self.logq.pop(0)
            self.stats['logs_dropped'] += 1
        self.logq.append(lfcp.clean(text))
        self._flush_logs()

    def _flush_logs(self):
        if self.sock is None or not self.logq:
            return
        self._in_sink = True
        try:
            now = time.ticks_ms()
            d = time.ticks_diff(now, self._log_at)
            self._log_at = now
            self._log_tokens = min(self._log_tokens + d, LOG_QUEUE * LOG_EVERY_MS)
            while self.logq and self._log_tokens >= LOG_EVERY_MS:
                self._log_tokens -= LOG_EVERY_MS
                text = self.logq.pop(0)
                for s in self.servers:
                    self._send(s, 'LOG', (text,))
        finally:
            self._in_sink = False

    # --- state ------------------------------------------------------------------------------

    def _on_uplink(self, up):
        """On a new uplink every server hears from us at once, re-resolved (the new network may
        have another DNS): the heartbeat re-opens the NAT mapping its commands come back through."""
        self.uplink = up
        if up:
            now = time.ticks_ms()
            for s in self.servers:
                s.addr = None
                s.retry = 0
                s.next_hb = now

    def _on_armed(self, state, *reason):
        self.armed = bool(state) and state != 'disarmed'  # 'armed', 'auto-armed', True, ...

    def status(self):
        now = time.ticks_ms()
        servers = []
        for s in self.servers:
            servers.append({
                'server': s.spec, 'state': s.state, 'reachable': s.state == 'reachable',
                'last_contact_s': None if s.last is None else time.ticks_diff(now, s.last) // 1000,
                'sent': s.sent, 'replies': s.replies})
        return {'enabled': self.enabled, 'mode': 'legacy' if self.legacy else 'auth',
                'port': self.cfg.port, 'up': self.up, 'servers': servers,
                'alarms_pending': len(self.alarms), 'queued': len(self.queue),
                'rejected': dict(self.rejected), 'stats': dict(self.stats)}
