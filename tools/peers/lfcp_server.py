"""Reference LFCP management server: what the cameras report to, and the firmware's test peer.

Keeps a table of devices (name, observed address, last heartbeat, armed, reachable), queues
commands per device and delivers the oldest in the reply to the device's next message until the
device ACKs it, records alarms (MOAL), LOG lines, ERR reasons and STAT answers. Run two
instances for servers A and B. The JSON API listens on 127.0.0.1 only: it has no
authentication. The key comes from $LFCP_KEY or --key-file, never from the command line.

    LFCP_KEY=... python tools/peers/lfcp_server.py serve --port 8443 --api 127.0.0.1:8480
    python tools/peers/lfcp_server.py devices --api 127.0.0.1:8480
    python tools/peers/lfcp_server.py queue --api 127.0.0.1:8480 cam1 ENAL
    python tools/peers/lfcp_server.py queue --api 127.0.0.1:8480 cam1 DSLP 600
    LFCP_KEY=... python tools/peers/lfcp_server.py direct --name cam1 192.168.1.20:8443 STAT
"""
import argparse
import asyncio
import collections
import json
import os
import socket
import sys
import time
import urllib.request

from firmware.lfcp import codec as lfcp  # noqa: E402  (the same codec as the firmware)

MAX_DEVICES = 10000


def _name_ok(name):
    return 0 < len(name) < 32 and all(c.isalnum() or c in '-_' for c in name)


class Ids:
    """Command ids: milliseconds since 1970, strictly increasing, so a restarted server never
    reuses an id a device remembers as done."""

    def __init__(self):
        self.last = 0

    def __call__(self):
        self.last = max(self.last + 1, int(time.time() * 1000))
        return self.last


class Command:
    def __init__(self, cid, typ, params):
        self.id = cid
        self.type = typ
        self.params = [lfcp.clean(p) for p in params]
        self.state = 'queued'  # -> sent -> acked [-> failed | answered], or expired
        self.tries = 0
        self.error = None
        self.answer = None
        self.time = time.time()

    def fields(self):
        p = self.params + ['0'] * (5 - len(self.params))
        return p + [str(self.id)]

    def as_dict(self):
        params = list(self.params)
        if self.type == 'TLGC' and params:
            params[0] = '***'  # the bot token never leaves the server through the API
        return {'id': self.id, 'type': self.type, 'params': params, 'state': self.state,
                'tries': self.tries, 'error': self.error, 'answer': self.answer,
                'time': self.time}


class Device:
    def __init__(self, name):
        self.name = name
        self.addr = None
        self.last = None  # monotonic time of the last valid message
        self.last_wall = None
        self.armed = None
        self.auth = None
        self.hw = 0  # highest seq accepted from the device
        self.heartbeats = 0
        self.queue = collections.deque()
        self.history = collections.deque(maxlen=50)
        self.alarms = collections.deque(maxlen=100)
        self.alarm_ids = collections.deque(maxlen=32)
        self.logs = collections.deque(maxlen=200)
        self.status = None

    def reachable(self, limit):
        return self.last is not None and time.monotonic() - self.last < limit

    def find(self, cid):
        for c in list(self.queue) + list(self.history):
            if str(c.id) == cid:
                return c
        return None

    def summary(self, limit):
        return {'name': self.name, 'address': '%s:%d' % self.addr[:2] if self.addr else None,
                'last_heartbeat': self.last_wall, 'armed': self.armed,
                'reachable': self.reachable(limit), 'authenticated': self.auth,
                'heartbeats': self.heartbeats, 'queued': len(self.queue),
                'alarms': len(self.alarms), 'status': self.status}

    def detail(self, limit):
        d = self.summary(limit)
        d['commands'] = [c.as_dict() for c in list(self.history) + list(self.queue)]
        d['alarms'] = list(self.alarms)
        d['logs'] = list(self.logs)
        return d


class LfcpServer(asyncio.DatagramProtocol):
    def __init__(self, key=None, legacy=False, unreachable_after=60, max_tries=5, rate=200,
                 state=None, echo=None):
        self.key = lfcp.Hmac(key) if key else None
        self.legacy = legacy or not key
        self.limit = unreachable_after
        self.max_tries = max_tries
        self.rate = rate
        self.state_path = state
        self.echo = echo  # fn(text) for the console, or None
        self.devices = {}
        self.ids = Ids()
        self.transport = None
        self.rejected = collections.Counter()
        self.received = 0
        self.replies = 0
        self._buckets = {}
        self._dirty = False
        self.observers = []  # fn(device, type, fields) after each accepted report (mqtt_bridge)
        if state:
            self.load()

    # --- the datagram side ------------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport

    def error_received(self, exc):  # ICMP port unreachable from a device that went away
        pass

    def datagram_received(self, data, addr):
        self.received += 1
        if not self._allow(addr):
            self.rejected['rate'] += 1
            return
        try:
            f, seq = lfcp.decode(data, self.key)
        except lfcp.LfcpError as e:
            self.rejected[e.kind] += 1
            return
        if seq is None and not self.legacy:
            self.rejected['plain'] += 1
            return
        name, typ = f[0], f[1]
        if not _name_ok(name):
            self.rejected['name'] += 1
            return
        if typ not in lfcp.REPORTS:
            self.rejected['unknown'] += 1
            return
        dev = self.devices.get(name)
        if dev is None:
            if len(self.devices) >= MAX_DEVICES:
                self.rejected['full'] += 1
                return
            dev = self.devices[name] = Device(name)
        if seq is not None:
            if seq <= dev.hw:
                self.rejected['replay'] += 1
                return
            dev.hw = seq
        dev.addr = addr  # the NAT mapping the device's datagram just opened
        dev.last = time.monotonic()
        dev.last_wall = time.time()
        dev.auth = seq is not None
        self._dirty = True
        getattr(self, '_on_' + typ)(dev, f)
        for fn in self.observers:
            fn(dev, typ, f)
        if typ != 'ACK':
            self._reply(dev, typ, seq, f)

    def _on_HEARTBEAT(self, dev, f):
        dev.heartbeats += 1
        dev.armed = f[2] == '1'

    def _on_ACK(self, dev, f):
        c = dev.queue[0] if dev.queue else None
        if c is None or c.state != 'sent':
            return
        if f[7] == str(c.id) or (f[7] == '0' and f[2] in (c.type, '0')):
            c.state = 'acked'
            dev.history.append(dev.queue.popleft())
            if c.type in ('ENAL', 'DSAL'):
                dev.armed = c.type == 'ENAL'
            self._say('%s: %s %s acked' % (dev.name, c.type, c.id))

    def _on_ERR(self, dev, f):
        c = dev.find(f[7]) if f[7] != '0' else (dev.history[-1] if dev.history else None)
        if c is not None:
            c.state = 'failed'
            c.error = f[2]
            if c.type in ('ENAL', 'DSAL'):
                dev.armed = None
        dev.logs.append({'time': time.time(), 'text': 'ERR ' + f[2] + ' ' + f[3]})
        self._say('%s: ERR %s %s %s' % (dev.name, f[3], f[7], f[2]))

    def _on_LOG(self, dev, f):
        dev.logs.append({'time': time.time(), 'text': f[2]})
        self._say('%s: LOG %s' % (dev.name, f[2]))

    def _on_MOAL(self, dev, f):
        aid = f[7]
        if aid != '0' and aid in dev.alarm_ids:
            return  # a retransmission: answered again, recorded once
        dev.alarm_ids.append(aid)
        dev.alarms.append({'time': time.time(), 'text': f[2], 'id': aid})
        self._say('%s: ALARM %s' % (dev.name, f[2]))

    def _on_STAT(self, dev, f):
        dev.status = f[2]
        c = dev.find(f[7])
        if c is not None:
            c.answer = f[2]

    def _reply(self, dev, typ, seq, f):
        """ACK, or the oldest queued command: at most max_tries deliveries, then it expires.
        A MOAL is always answered with ACK,MOAL naming its id: that alarm is acknowledged (a
        command in its place would leave a plain device unsure which message got through)."""
        if typ == 'MOAL':
            return self._send(dev, 'ACK', (typ, 0, 0, 0, 0, f[7]), seq)
        while dev.queue and dev.queue[0].tries >= self.max_tries:
            c = dev.queue.popleft()
            c.state = 'expired'
            dev.history.append(c)
            self._say('%s: %s %s expired' % (dev.name, c.type, c.id))
        if dev.queue:
            c = dev.queue[0]
            c.tries += 1
            c.state = 'sent'
            self._send(dev, c.type, c.fields(), seq)
        else:
            self._send(dev, 'ACK', (typ,), seq)

    def _send(self, dev, typ, params, seq):
        key = self.key if seq is not None else None
        self.transport.sendto(lfcp.encode(dev.name, typ, params, seq, key, lfcp.DOWN), dev.addr)
        self.replies += 1

    def _allow(self, addr):
        now = time.monotonic()
        b = self._buckets.get(addr)
        if b is None:
            if len(self._buckets) > 4 * MAX_DEVICES:
                self._buckets.clear()
            b = self._buckets[addr] = [float(self.rate), now]
        b[0] = min(float(self.rate), b[0] + (now - b[1]) * self.rate)
        b[1] = now
        if b[0] < 1:
            return False
        b[0] -= 1
        return True

    def _say(self, text):
        if self.echo:
            self.echo(text)

    # --- the management side ----------------------------------------------------------------

    def queue(self, name, typ, params=()):
        if not _name_ok(name):
            raise ValueError('bad device name: %r' % name)
        if typ not in lfcp.COMMANDS:
            raise ValueError('unknown command %r; one of %s' % (typ, ' '.join(lfcp.COMMANDS)))
        if len(params) > 5:
            raise ValueError('at most 5 parameters')
        if typ == 'TLGC' and len(params) != 2:
            raise ValueError('TLGC needs a bot token and a chat id')
        c = Command(self.ids(), typ, params)
        lfcp.encode(name, typ, c.fields())   # ValueError (the API's 400) if it cannot be sent
        dev = self.devices.get(name) or self.devices.setdefault(name, Device(name))
        dev.queue.append(c)
        self._dirty = True
        return c

    def forget(self, name):
        """Drop a device (after re-flashing it, its seq starts again from 0)."""
        return self.devices.pop(name, None) is not None

    def stats(self):
        return {'devices': len(self.devices), 'received': self.received,
                'replies': self.replies, 'rejected': dict(self.rejected)}

    def save(self):
        if not self.state_path or not self._dirty:
            return
        data = {n: {'hw': d.hw, 'queue': [[c.id, c.type, c.params] for c in d.queue]}
                for n, d in self.devices.items()}
        tmp = self.state_path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump({'last_id': self.ids.last, 'devices': data}, f)
        os.replace(tmp, self.state_path)
        self._dirty = False

    def load(self):
        try:
            with open(self.state_path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return
        self.ids.last = data.get('last_id', 0)
        for name, d in data.get('devices', {}).items():
            dev = self.devices[name] = Device(name)
            dev.hw = d.get('hw', 0)
            for cid, typ, params in d.get('queue', []):
                dev.queue.append(Command(cid, typ, params))

    async def keep_saved(self, every=5):
        while True:
            await asyncio.sleep(every)
            self.save()


# --- the JSON API (127.0.0.1 only) ----------------------------------------------------------

async def _api_conn(srv, reader, writer):
    try:
        head = await asyncio.wait_for(reader.readuntil(b'\r\n\r\n'), 10)
        lines = head.decode('latin-1').split('\r\n')
        method, path = lines[0].split(' ')[:2]
        length = 0
        for h in lines[1:]:
            if h.lower().startswith('content-length:'):
                length = int(h.split(':', 1)[1])
        body = await reader.readexactly(length) if 0 < length <= 65536 else b''
        code, out = _route(srv, method, path.rstrip('/'), body)
    except (ValueError, KeyError, asyncio.IncompleteReadError, asyncio.TimeoutError,
            asyncio.LimitOverrunError) as e:
        code, out = 400, {'error': str(e)}
    data = json.dumps(out).encode()
    writer.write(b'HTTP/1.0 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n'
                 % (code, len(data)) + data)
    try:
        await writer.drain()
        writer.close()
    except OSError:
        pass


def _route(srv, method, path, body):
    parts = path.strip('/').split('/')
    if method == 'GET' and path == '/devices':
        return 200, [d.summary(srv.limit) for d in srv.devices.values()]
    if method == 'GET' and path == '/stats':
        return 200, srv.stats()
    if method == 'GET' and path == '/alarms':
        return 200, [dict(a, device=d.name) for d in srv.devices.values() for a in d.alarms]
    if len(parts) >= 2 and parts[0] == 'devices':
        name = parts[1]
        if method == 'POST' and parts[2:] == ['commands']:
            req = json.loads(body or b'{}')
            c = srv.queue(name, req.get('type', ''), [str(p) for p in req.get('params', [])])
            return 201, c.as_dict()
        dev = srv.devices.get(name)
        if dev is None:
            return 404, {'error': 'no such device: ' + name}
        if method == 'GET' and len(parts) == 2:
            return 200, dev.detail(srv.limit)
        if method == 'DELETE' and len(parts) == 2:
            srv.forget(name)
            return 200, {'forgotten': name}
    return 404, {'error': 'no route: %s %s' % (method, path)}


def _hostport(text):
    host, port = text.rsplit(':', 1)
    return host, int(port)


async def serve(args, key):
    srv = LfcpServer(key, args.legacy, args.unreachable_after, state=args.state,
                     echo=None if args.quiet else lambda t: print(t, flush=True))
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: srv, local_addr=(args.host, args.port))
    try:  # room for bursts: many devices whose heartbeats happen to coincide
        transport.get_extra_info('socket').setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    except OSError:
        pass
    from peers import mqtt_bridge
    bridge = mqtt_bridge.start(srv, loop, args)
    host, port = _hostport(args.api)
    api = await asyncio.start_server(lambda r, w: _api_conn(srv, r, w), host, port)
    udp_port = transport.get_extra_info('sockname')[1]
    api_port = api.sockets[0].getsockname()[1]
    print('lfcp server on udp %s:%d, api http://%s:%d, %s' % (
        args.host, udp_port, host, api_port,
        'legacy (plain accepted)' if srv.legacy else 'authenticated only'), flush=True)
    try:
        await srv.keep_saved()
    finally:
        srv.save()
        transport.close()
        if bridge:
            bridge.close()


# --- the command line -----------------------------------------------------------------------

def _call(api, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request('http://%s%s' % (api, path), data=data, method=method,
                                 headers={'Content-Type': 'application/json'})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        sys.exit('error: %s' % json.load(e).get('error'))


def direct(target, name, key, typ, params, timeout=2.0, tries=3):
    """Send one command straight to a device's UDP port; return the device's answers."""
    hmac = lfcp.Hmac(key) if key else None
    cid = Ids()()
    addr = _hostport(target)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.2)
    got = []
    if len(params) > 5:
        raise ValueError('at most 5 parameters')
    fields = Command(cid, typ, params).fields()
    seq = int(time.time() * 1000)
    try:
        for _ in range(tries):
            seq += 1  # a fresh seq per try, the same id: the device runs it once
            s.sendto(lfcp.encode(name, typ, fields, seq if hmac else None, hmac, lfcp.DOWN), addr)
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                try:
                    data, _ = s.recvfrom(512)
                    f, _ = lfcp.decode(data, hmac)
                except (socket.timeout, lfcp.LfcpError):
                    continue
                if f[7] == str(cid):
                    got.append(f)
                    if f[1] == 'ACK':
                        end = min(end, time.monotonic() + 0.5)  # an ERR or STAT may follow
            if got:
                return got
        return got
    finally:
        s.close()


def _key(args):
    if args.key_file:
        with open(args.key_file) as f:
            return f.read().strip()
    return os.environ.get('LFCP_KEY', '')


def main(argv=None):
    p = argparse.ArgumentParser(description='LFCP reference management server')
    sub = p.add_subparsers(dest='cmd', required=True)
    s = sub.add_parser('serve', help='run a server')
    s.add_argument('--host', default='0.0.0.0')
    s.add_argument('--port', type=int, default=8443)
    s.add_argument('--api', default='127.0.0.1:8480', help='JSON API address (keep it local)')
    s.add_argument('--key-file', help='file holding the shared key (else $LFCP_KEY)')
    s.add_argument('--legacy', action='store_true', help='also accept plain LFCP devices')
    s.add_argument('--unreachable-after', type=float, default=60)
    s.add_argument('--state', help='JSON file keeping seq high-water marks and queues')
    s.add_argument('--quiet', action='store_true')
    from peers import mqtt_bridge
    mqtt_bridge.add_arguments(s)
    for name, hlp in (('devices', 'list devices'), ('alarms', 'list alarms'),
                      ('stats', 'counters'), ('show', 'one device in detail'),
                      ('forget', 'drop a device (after re-flashing it)')):
        c = sub.add_parser(name, help=hlp)
        c.add_argument('--api', default='127.0.0.1:8480')
        if name in ('show', 'forget'):
            c.add_argument('device')
    q = sub.add_parser('queue', help='queue a command for a device')
    q.add_argument('--api', default='127.0.0.1:8480')
    q.add_argument('device')
    q.add_argument('type', choices=lfcp.COMMANDS)
    q.add_argument('params', nargs='*')
    d = sub.add_parser('direct', help='send a command straight to a device on the LAN')
    d.add_argument('--key-file')
    d.add_argument('--name', required=True, help="the device's name")
    d.add_argument('target', help='host:port of the device')
    d.add_argument('type', choices=lfcp.COMMANDS)
    d.add_argument('params', nargs='*')
    args = p.parse_args(argv)

    if args.cmd == 'serve':
        key = _key(args)
        if not key and not args.legacy:
            sys.exit('no key: set $LFCP_KEY or --key-file (or --legacy for plain LFCP only)')
        try:
            asyncio.run(serve(args, key))
        except KeyboardInterrupt:
            pass
        return
    if args.cmd == 'direct':
        try:
            got = direct(args.target, args.name, _key(args), args.type, args.params)
        except ValueError as e:   # too many parameters, or a message over 128 bytes
            sys.exit('direct: %s' % e)
        for f in got:
            print(','.join(f))
        sys.exit(0 if got and not any(f[1] == 'ERR' for f in got) else 1)
    if args.cmd == 'queue':
        out = _call(args.api, 'POST', '/devices/%s/commands' % args.device,
                    {'type': args.type, 'params': args.params})
    elif args.cmd in ('show', 'forget'):
        out = _call(args.api, 'GET' if args.cmd == 'show' else 'DELETE', '/devices/' + args.device)
    else:
        out = _call(args.api, 'GET', '/' + args.cmd)
    print(json.dumps(out, indent=2))


if __name__ == '__main__':
    main()
