"""A small MQTT 3.1.1 client on the shared asyncio loop: QoS 0 and 1, keep-alive, last will,
user/password, TLS with a verified broker certificate, reconnect with backoff.

Why our own (docs/mqtt.md): micropython-lib's umqtt.simple/robust block the VM on every socket
call, and mqtt_as (micropython-mqtt) connects and reconnects Wi-Fi itself, which belongs to
firmware/net/wifi.py here. This client owns the broker connection only: it waits for the uplink
event, and the transport is the HTTP client's (same DNS cache, same TLS handling, 2 KB slices
with a yield between them, so a 30 KB photo never holds up the stream).

Outgoing messages wait in a small outbox keyed by topic: a state that changes twice before it is
sent goes out once, with its latest value. Retained messages are kept after sending, so the
whole retained state is published again after every reconnect (the broker may have lost it).
"""
import asyncio
import time

from firmware.core.events import UPLINK
from firmware.net import http_client as net

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK = 1, 2, 3, 4, 8, 9
PINGREQ, PINGRESP, DISCONNECT = 12, 13, 14
REFUSED = {1: 'unacceptable protocol version', 2: 'client id rejected', 3: 'server unavailable',
           4: 'bad user name or password',
           5: 'not authorised: check mqtt.user and mqtt.password, and the broker account'}
MAX_IN = 1024          # largest incoming message kept (commands are short); bigger ones are dropped
BACKOFF_S = (1, 2, 5, 10, 30, 60)
ACK_TIMEOUT_S = 10


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return out


def _str(s):
    if isinstance(s, str):
        s = s.encode()
    return bytes((len(s) >> 8, len(s) & 0xFF)) + s


class Refused(Exception):
    """The broker answered CONNACK with a refusal (bad credentials...): retrying at once is futile."""


class Client:
    def __init__(self, cfg, log, bus, client_id, will, on_message, on_connect):
        self.cfg = cfg                    # cfg.mqtt
        self.log = log
        self.client_id = client_id
        self.will = will                  # (topic, payload): retained, QoS 1
        self.on_message = on_message      # fn(topic str, payload bytes)
        self.on_connect = on_connect      # fn(): called once per session
        self.subs = []
        self.retained = {}                # topic -> payload, sent again after each reconnect
        self.outbox = {}                  # topic -> (payload, retain, qos)
        self.order = []                   # topics of the outbox, oldest first
        self.connected = False
        self.uplink = False
        self.error = None
        self.connects = 0
        self.sent = 0
        self.received = 0
        self.dropped = 0
        self.conn = None
        self._pid = 0
        self._acks = {}                   # packet id -> asyncio.Event, QoS 1 waiting for PUBACK
        self._wake = asyncio.Event()      # outbox or uplink changed
        self._up = asyncio.Event()
        self._lock = asyncio.Lock()       # one writer on the socket at a time
        self._last_rx = 0
        self._flags = 0
        bus.on(UPLINK, self._on_uplink)
        if cfg.password:
            log.secret(cfg.password)

    def _on_uplink(self, up):
        self.uplink = up
        if up:
            self._up.set()
        else:
            self._up.clear()
            self._drop('uplink lost')
        self._wake.set()

    # --- what the firmware calls ---------------------------------------------------------------
    def subscribe(self, topic):
        self.subs.append(topic)

    def publish(self, topic, payload, retain=False, qos=0, remember=True):
        """Queue a message; the latest payload for a topic wins. Never blocks, never raises.
        A retained message is remembered for the next session unless `remember` is False (big
        payloads such as photos, configs that are rebuilt on connection)."""
        if isinstance(payload, str):
            payload = payload.encode()
        if retain and remember:
            self.retained[topic] = payload
        if topic not in self.outbox:
            self.order.append(topic)
        self.outbox[topic] = (payload, retain, qos)
        self._wake.set()

    def status(self):
        s = {'broker': '%s:%d' % (self.cfg.host, self.cfg.port), 'connected': self.connected,
             'connects': self.connects, 'sent': self.sent, 'received': self.received,
             'queued': len(self.order), 'dropped': self.dropped}
        if self.error:
            s['error'] = self.error
        return s

    # --- the connection ----------------------------------------------------------------------
    async def run(self):
        fails = 0
        while True:
            if not self.uplink:
                await self._up.wait()
            try:
                await self._session()
                fails = 0
            except Refused as e:
                self._fail('broker refused the connection: %s' % e.args[0])
                fails = len(BACKOFF_S) - 1        # wrong credentials stay wrong: retry slowly
            except asyncio.TimeoutError:
                self._fail('%s:%d: the broker did not answer within %d s' % (
                    self.cfg.host, self.cfg.port, self.cfg.timeout_s))
                fails = min(fails + 1, len(BACKOFF_S) - 1)
            except (OSError, ValueError, EOFError) as e:
                self._fail(str(e) or repr(e))
                fails = min(fails + 1, len(BACKOFF_S) - 1)
            finally:
                self._close()
            await asyncio.sleep(BACKOFF_S[fails])

    def _fail(self, why):
        if why != self.error:
            self.log.warn('mqtt:', why)
        self.error = why

    def _drop(self, why):
        if self.conn is not None:
            self.log.warn('mqtt: disconnected:', why)
            self._close()

    def _close(self):
        was = self.conn
        self.conn = None
        self.connected = False
        for ev in self._acks.values():
            ev.set()
        self._acks = {}
        if was is not None:
            try:
                was.s.close()
            except OSError:
                pass

    async def _open(self):
        c = self.cfg
        where = '%s:%d' % (c.host, c.port)
        ai = net.resolve(c.host, c.port)
        raw = s = await asyncio.wait_for(net._connect(ai), c.timeout_s)
        if c.tls_ca:
            with open(c.tls_ca, 'rb') as f:
                ctx = net.tls_context(f.read())
            s = ctx.wrap_socket(raw, server_hostname=c.host, do_handshake_on_connect=False)
            s.setblocking(False)
        self.conn = net._Conn(s, raw, bool(c.tls_ca))
        return where

    def _connect_packet(self):
        c = self.cfg
        flags = 0x02 | 0x04 | 0x08 | 0x20        # clean session, will, will QoS 1, will retain
        body = bytearray(b'\x00\x04MQTT\x04')
        payload = _str(self.client_id) + _str(self.will[0]) + _str(self.will[1])
        if c.user:
            flags |= 0x80
            payload += _str(c.user)
            if c.password:
                flags |= 0x40
                payload += _str(c.password)
        body.append(flags)
        body += bytes((c.keepalive_s >> 8, c.keepalive_s & 0xFF))
        return self._packet(CONNECT << 4, body + payload)

    @staticmethod
    def _packet(first, body):
        return bytes((first,)) + _varint(len(body)) + body

    async def _session(self):
        c = self.cfg
        try:
            where = await self._open()
        except OSError as e:
            raise OSError('%s:%d: connect failed: %s' % (c.host, c.port, net._ERRNO.get(e.errno, e)))
        try:    # the TLS handshake runs inside this first write
            await asyncio.wait_for(self.conn.send(self._connect_packet()), c.timeout_s)
        except ValueError as e:     # mbedTLS: verification failures come as ValueError
            msg = e.args[0].strip() if e.args and isinstance(e.args[0], str) else 'handshake failed'
            raise ValueError('%s: TLS: %s' % (where, msg))
        typ, body = await asyncio.wait_for(self._read(), c.timeout_s)
        if typ != CONNACK or len(body) < 2:
            raise ValueError('%s: no CONNACK' % where)
        if body[1]:
            raise Refused(REFUSED.get(body[1], 'code %d' % body[1]))
        self.connected = True
        self.connects += 1
        self._last_rx = time.ticks_ms()
        if self.error or self.connects == 1:
            self.log('mqtt: connected to', where)
        self.error = None
        reader = asyncio.create_task(self._reader())
        try:
            if self.subs:
                body = bytearray(self._next_pid().to_bytes(2, 'big'))
                for t in self.subs:
                    body += _str(t) + b'\x01'
                await self._send(self._packet(SUBSCRIBE << 4 | 2, body))
            for t in self.retained:          # the broker may have restarted and lost them
                if t not in self.outbox:
                    self.order.append(t)
                    self.outbox[t] = (self.retained[t], True, 1)
            self.on_connect()
            await self._pump()
        finally:
            reader.cancel()

    async def _pump(self):
        """Send the outbox; ping when idle; give up when the broker stops answering."""
        ka = self.cfg.keepalive_s * 1000
        while self.conn is not None:
            if self.order:
                topic = self.order.pop(0)
                payload, retain, qos = self.outbox.pop(topic)
                try:
                    await self._publish(topic, payload, retain, qos)
                except BaseException:
                    if topic not in self.outbox:     # not sent: keep it for the next session
                        self.order.insert(0, topic)
                        self.outbox[topic] = (payload, retain, qos)
                    raise
                payload = None
                continue
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), ka // 2000 or 1)
            except asyncio.TimeoutError:
                if time.ticks_diff(time.ticks_ms(), self._last_rx) > ka * 3 // 2:
                    raise OSError('%s:%d: the broker was silent for %d s' % (
                        self.cfg.host, self.cfg.port, ka * 3 // 2000))
                await self._send(bytes((PINGREQ << 4, 0)))

    async def _publish(self, topic, payload, retain, qos):
        pid = self._next_pid() if qos else 0
        head = bytearray(_str(topic))
        if qos:
            head += pid.to_bytes(2, 'big')
        first = PUBLISH << 4 | (qos << 1) | (1 if retain else 0)
        head = bytes((first,)) + _varint(len(head) + len(payload)) + head
        ev = None
        if qos:
            ev = self._acks[pid] = asyncio.Event()
        async with self._lock:
            conn = self.conn
            if conn is None:
                raise OSError('not connected')
            await asyncio.wait_for(conn.send(head), self.cfg.timeout_s)
            await asyncio.wait_for(conn.send(payload), self.cfg.timeout_s + len(payload) // 4096)
        if ev is not None:
            try:
                await asyncio.wait_for(ev.wait(), ACK_TIMEOUT_S)
            except asyncio.TimeoutError:
                self._acks.pop(pid, None)
                raise OSError('%s:%d: the broker did not acknowledge within %d s' % (
                    self.cfg.host, self.cfg.port, ACK_TIMEOUT_S))
            if self._acks.pop(pid, None) is None:
                raise OSError('connection lost before PUBACK')
        self.sent += 1

    async def _send(self, data):
        async with self._lock:
            conn = self.conn
            if conn is None:
                raise OSError('not connected')
            await asyncio.wait_for(conn.send(data), self.cfg.timeout_s)

    def _next_pid(self):
        self._pid = self._pid % 65535 + 1
        return self._pid

    async def _reader(self):
        conn = self.conn
        try:
            while self.conn is conn:
                typ, body = await self._read()
                self._last_rx = time.ticks_ms()
                if typ == PUBLISH:
                    await self._incoming(body)
                elif typ == PUBACK and body and len(body) >= 2:
                    ev = self._acks.get(body[0] << 8 | body[1])
                    if ev:
                        ev.set()
                elif typ == SUBACK and body and body.find(b'\x80', 2) >= 0:
                    self._fail('broker refused a subscription (check the ACL for %s)' %
                               ', '.join(self.subs))
                elif typ == -1:
                    self.dropped += 1
                    self.log.warn('mqtt: message over %d bytes dropped' % MAX_IN)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the pump notices the closed connection and reconnects
            if self.conn is conn:
                self._drop(str(e) or repr(e))
                self._wake.set()

    async def _read(self):
        conn = self.conn
        if conn is None:
            raise EOFError
        b = bytearray(1)
        await conn.into(memoryview(b))
        first = b[0]
        n = 0
        shift = 0
        while True:
            await conn.into(memoryview(b))
            n |= (b[0] & 0x7F) << shift
            shift += 7
            if not b[0] & 0x80:
                break
            if shift > 21:
                raise ValueError('bad packet length')
        if n > MAX_IN:
            left = n
            while left:
                k = min(left, 64)
                await conn.into(memoryview(bytearray(k)))
                left -= k
            return -1, first
        body = bytearray(n)
        if n:
            await conn.into(memoryview(body))
        self._flags = first & 0x0F
        return first >> 4, body

    async def _incoming(self, body):
        qos = (self._flags >> 1) & 3
        n = body[0] << 8 | body[1]
        topic = bytes(body[2:2 + n]).decode()
        i = 2 + n
        if qos:
            pid = bytes(body[i:i + 2])
            i += 2
            await self._send(bytes((PUBACK << 4, 2)) + pid)
        self.received += 1
        try:
            self.on_message(topic, bytes(body[i:]))
        except Exception as e:  # a handler bug must not take the connection down
            self.log.error('mqtt: message on', topic, 'failed:', repr(e))
