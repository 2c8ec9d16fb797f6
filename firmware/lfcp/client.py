"""LFCP device service: heartbeats to the management servers, their commands, alarms, LOG lines.

One UDP socket on lfcp.port. Each HEARTBEAT opens the NAT mapping the server's reply comes back
through. An authenticated reply must carry the seq of a report this device sent that server and
has not seen answered, so a reply replayed later is refused; the device's own seq survives
reboots through a high-water mark reserved in blocks (flash written once per SEQ_BLOCK
messages). Messages whose seq answers nothing are direct commands from the LAN: their seq must
lie in a window above everything the device ever sent and the last direct seq accepted, and not
far in the future. Every command runs once: once per id, and a plain command without id
delivered again before the server saw its ACK is only ACKed again. docs/protocol.md has the rules.
Seams: servers.py (one server), alarms.py (MOAL retransmission), limiter.py (rate limiting),
state.py (lfcp.json, seqs), logq.py (the LOG queue); here: the socket, receive and dispatch,
commands, the LOG sink.
"""
import asyncio
import socket
import time

from firmware.core import commands
from firmware.core.aio import readable
from firmware.core.commands import CommandError
from firmware.core.events import ARMED, MANAGEMENT, UPLINK
from firmware.core.secret import valid_token
from firmware.lfcp import codec as lfcp
from firmware.lfcp.alarms import Alarms
from firmware.lfcp.limiter import Limiter
from firmware.lfcp.logq import LogQueue
from firmware.lfcp.servers import Server
from firmware.lfcp.state import State

STATE = 'lfcp.json'
QUEUE = 4  # commands waiting for the worker
TICK_MS = 250
DSLP_DEFAULT_S = 60  # the original's TIME_TO_SLEEP
EAGAIN = 11

# LFCP command -> command layer name; the original's LOG text is "<stem>_request_via_<source>"
CMD = commands.by_lfcp()
LOG_STEM = dict((c[commands.NAME], c[commands.LOG]) for c in commands.TABLE if c[commands.LOG])
REJECTS = ('oversized', 'fields', 'malformed', 'bad_mac', 'name', 'unknown', 'replay', 'future',
           'plain', 'unsolicited', 'source', 'rate')


class LfcpClient:
    def __init__(self, cfg, log, bus, commands, bind='0.0.0.0', state_path=STATE, beat=None):
        c = cfg.lfcp
        self.cfg = c
        self.name = cfg.device.name
        self.log = log
        self.bus = bus
        self.commands = commands
        self.bind = bind
        self.beat = beat
        self.key = lfcp.Hmac(c.key) if c.key else None
        if c.key:
            log.secret(c.key)
        self.legacy = c.legacy
        self.strict = c.strict_original
        self.reply_from = c.reply_from
        self.repeat_ms = c.repeat_window_s * 1000
        self.enabled = bool(c.key) or c.legacy
        self.servers = [Server(s) for s in c.servers]
        self.limiter = Limiter(c.rate_limit, len(self.servers))
        self.alarms = Alarms(log, self.servers, c.alarm_deadline_s, self._send)
        self.state = State(state_path, log, self.servers)
        self.sock = None
        self.queue = []
        self.wake = asyncio.Event()
        self.logs = LogQueue()
        self._in_sink = False
        self._discovery = None
        self.armed = False
        self.up = None
        self.uplink = None  # False while Wi-Fi has no upstream: heartbeats wait for it
        self.started = time.ticks_ms()
        self.rejected = dict((k, 0) for k in REJECTS)
        self.stats = {'sent': 0, 'received': 0, 'commands': 0, 'duplicates': 0,
                      'send_errors': 0, 'errors': 0}
        bus.on(ARMED, self._on_armed)
        bus.on(UPLINK, self._on_uplink)

    # --- life cycle -------------------------------------------------------------------------

    async def run(self):
        if not self.enabled:
            self.log.warn('lfcp: off: set lfcp.key (or lfcp.legacy for plain servers)')
            return
        if self.legacy:
            self.log.warn('lfcp: legacy mode: plain LFCP to the servers, TLGC refused')
        self.state.load()
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
            if self.cfg.discovery:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
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

    # --- the loops --------------------------------------------------------------------------

    async def _tick(self):
        hb = self.cfg.heartbeat_s * 1000
        failing = False
        next_disc = time.ticks_ms()
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
                if self.cfg.discovery and time.ticks_diff(now, next_disc) >= 0:
                    next_disc = time.ticks_add(now, hb)
                    self._announce()
                self._liveness(now)
                self.alarms.tick(now)
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

    def _announce(self):
        """The original's discovery datagram: the bare device name, to lfcp.discovery."""
        if self.uplink is False:
            return
        try:
            if self._discovery is None:
                host, port = self.cfg.discovery.rsplit(':', 1)
                self._discovery = socket.getaddrinfo(host, int(port))[0][-1]
            self.sock.sendto(self.name.encode(), self._discovery)
        except OSError:
            self.stats['send_errors'] += 1

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
            self.state.save()  # the id is done (and a direct seq used) before the command starts
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
        i = self._budget(addr)
        if not (self.limiter.allow(addr) if i is None else self.limiter.allow_server(i)):
            self.rejected['rate'] += 1
            return
        try:
            f, seq = lfcp.decode(data, self.key, lfcp.DOWN)
        except lfcp.LfcpError as e:
            self.rejected[e.kind] += 1
            if e.auth and e.seq is not None:
                self._err(e.seq, addr, (e.kind, e.fields[1], 0, 0, 0, e.fields[7]))
            return
        if seq is None:
            return self._plain(f, addr)
        if f[0] != self.name:  # checked before the reply counts for anything
            self.rejected['name'] += 1
            self._err(seq, addr, ('wrong_name', f[1], 0, 0, 0, f[7]))
            return
        i = self._origin(seq, addr)
        if i is None:
            return
        self._message(self.servers[i] if i >= 0 else addr, i, f, True)

    def _budget(self, addr):
        """Index of the configured server whose own rate budget addr uses, else None."""
        for i in range(len(self.servers)):
            s = self.servers[i]
            if s.sends_from(addr, 'host' if self.reply_from == 'any' else self.reply_from):
                return i
        return None

    def _err(self, seq, addr, params):
        """ERR to a key holder whose datagram is refused: never counted as a reply."""
        for s in self.servers:
            if s.owes(seq) and s.sends_from(addr, self.reply_from):
                return self._send(s, 'ERR', params)
        if self.state.direct(seq) is None:
            self._send(addr, 'ERR', params)

    def _origin(self, seq, addr):
        """Server index whose report seq answers (and claim it), -1 for a fresh direct
        command (its seq stored), else None."""
        for i in range(len(self.servers)):
            s = self.servers[i]
            if s.owes(seq):
                if not s.sends_from(addr, self.reply_from):
                    self.rejected['source'] += 1
                    return None
                s.claim(seq)
                self._heard(i, seq)
                return i
        why = self.state.direct(seq, True)
        if why:
            self.rejected[why] += 1
            return None
        return -1

    def _plain(self, f, addr):
        if not self.legacy:
            self.rejected['plain'] += 1
            return
        if f[0] != self.name:  # another device's datagram proves nothing about our server
            self.rejected['name'] += 1
            return
        i = self._plain_server(addr)
        if i is None:
            self.rejected['unsolicited'] += 1
            return
        self.servers[i].plain_wait -= 1
        self._heard(i, None)
        self._message(self.servers[i], i, f, False)

    def _plain_server(self, addr):
        """The server owed a plain reply that addr may speak for. A server's own address speaks
        for that server only (a duplicate from B never counts as A's answer); another address
        for the first server owed a reply that lfcp.reply_from lets it speak for."""
        for i in range(len(self.servers)):
            if self.servers[i].addr == addr:
                return i if self.servers[i].plain_wait else None
        for i in range(len(self.servers)):
            s = self.servers[i]
            if s.plain_wait and s.sends_from(addr, self.reply_from):
                return i
        return None

    def _heard(self, i, seq):
        s = self.servers[i]
        s.heard(time.ticks_ms())
        if seq is not None:
            self.alarms.answered(i, seq)
        if s.state != 'reachable':
            self._liveness(s.last)

    def _message(self, origin, i, f, auth):
        typ = f[1]
        srv = self.servers[i] if i >= 0 else None
        if typ == 'ACK':
            if srv:
                srv.plain_other()
                if not auth and f[2] == 'MOAL':
                    self.alarms.plain_ack(i, f[7])
            return
        if typ not in CMD:
            self.rejected['unknown'] += 1
            if srv:
                srv.plain_other()
            if auth:
                self._send(origin, 'ERR', ('unknown_type', typ, 0, 0, 0, f[7]))
            return
        cid = f[7]
        now = time.ticks_ms()
        if cid != '0':
            repeat = self.state.ran(srv.spec if srv else 'direct', cid)
        else:
            repeat = srv is not None and srv.plain_repeat(','.join(f[1:7]), self.repeat_ms, now)
        if repeat:
            self.stats['duplicates'] += 1
            self._send(origin, 'ACK', (typ, 0, 0, 0, 0, cid))
            return
        args, err = self._args(typ, f, auth)
        self._send(origin, 'ACK', (typ, 0, 0, 0, 0, cid))
        if cid == '0' and srv:
            srv.plain_ran(','.join(f[1:7]), now)
        if err is None and len(self.queue) >= QUEUE:
            err = 'busy'
        if err:
            self._send(origin, 'ERR', (err, typ, 0, 0, 0, cid))
            return
        self.stats['commands'] += 1
        self.queue.append((origin, typ, cid, args))
        self.wake.set()

    def _args(self, typ, f, auth):
        """Command parameters as command-layer arguments, or an ERR reason."""
        if typ == 'TLGC':
            if not auth:
                return None, 'auth_required'
            token, chat = f[2], f[3]
            if not token or not valid_token(token):
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
                seq = self.state.next_seq()
                data = lfcp.encode(self.name, typ, params, seq, self.key, lfcp.UP)
            else:
                if self.strict:
                    params = _original(typ, params)
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
                elif srv.plain_wait < 16:
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
        """Send MOAL to every server; retransmit with backoff until each acknowledges it or
        lfcp.alarm_deadline_s passes. Returns the alarm id (None when LFCP is off)."""
        if not self.enabled or not self.servers:
            return None
        return self.alarms.add(self.state.next_seq(), lfcp.clean(text), time.ticks_ms()).id

    # --- LOG lines --------------------------------------------------------------------------

    def log_sink(self, level, line):
        """Log sink: command lines become the original's LOG texts; warnings and errors too."""
        if self._in_sink:
            return
        p = line.split(' ')
        if len(p) == 4 and p[0] == 'command' and p[2] == 'from':
            if p[1] == 'sleep':
                return  # said when the sleep really starts: a refused sleep is no sleep
            self.report(LOG_STEM.get(p[1], p[1]) + '_request_via_' + p[3], True)
        elif p[0] == 'deepsleep:':
            self.report('device_going_to_deep_sleep', True)
        elif level in ('W', 'E'):
            self.report(level + '_' + line)

    def report(self, text, owner=False):
        """Queue one LOG text for every server (coalesced under a flood: logq.py)."""
        self.logs.add(lfcp.clean(text), owner)
        self._flush_logs()

    def _flush_logs(self):
        if self.sock is None:
            return
        self._in_sink = self.state.quiet = True
        try:
            text = self.logs.due()
            while text:
                for s in self.servers:
                    self._send(s, 'LOG', (text,))
                text = self.logs.due()
        finally:
            self._in_sink = self.state.quiet = False

    # --- state ------------------------------------------------------------------------------

    def _on_uplink(self, up):
        """On a new uplink every server hears from us at once, re-resolved (the new network may
        have another DNS): the heartbeat re-opens the NAT mapping its commands come back through."""
        self.uplink = up
        if up:
            now = time.ticks_ms()
            self._discovery = None
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
                'reply_from': self.reply_from, 'strict_original': self.strict,
                'alarms_pending': len(self.alarms.pending),
                'alarms_acknowledged': self.alarms.acknowledged,
                'alarms_unacknowledged': self.alarms.lost, 'queued': len(self.queue),
                'rate_sources_tracked': len(self.limiter.sources),
                'rejected': dict(self.rejected),
                'stats': dict(self.stats, logs_coalesced=self.logs.coalesced,
                              logs_dropped=self.logs.dropped)}


def _original(typ, params):
    """lfcp.strict_original: the fields the original leaves 0 stay 0 (HEARTBEAT's armed flag,
    ACK's type and id, ERR's type and id, MOAL's id)."""
    if typ in ('HEARTBEAT', 'ACK'):
        return ()
    if typ in ('ERR', 'MOAL', 'LOG'):
        return params[:1]
    return params
