"""The LFCP server's bridge to MQTT: every device the server hears becomes a device on the broker.

    LFCP_KEY=... MQTT_PASSWORD=... python tools/peers/lfcp_server.py serve \
        --mqtt 127.0.0.1:1883 --mqtt-user lfcp [--mqtt-ca ca.pem] [--mqtt-destructive]

Per device, under <base>/<name>/ (base "lfcp" by default), with Home Assistant discovery under
the discovery prefix: an alarm control panel (state from the heartbeats' armed flag and the ACKs
of ENAL/DSAL; ARM_AWAY/DISARM queued as ENAL/DSAL), a motion sensor and the last alarm time (from
MOAL), the last STAT answer, a status button (STAT) and, with --mqtt-destructive, a reboot button
(RST). Availability is two-fold: the bridge's own (its last will) and the device's LFCP liveness
(reachable within --unreachable-after). Commands go through the server's queue, so they are
delivered with its ids and retries, and executed once by the device. Errors go to <name>/result.

The broker client is paho-mqtt (pinned in requirements.txt), driven by the server's asyncio loop
(its sockets registered with the loop, connection attempts in an executor): a publish never waits
for the broker, and nothing crosses threads on the alarm path.
"""
import asyncio
import collections
import gc
import json
import os
import socket
import threading
import time

MARK = '@@name@@'     # stands for the device name in the discovery templates ('@' is not in names)
ANNOUNCE_BATCH = 100
HOLD_S = 10          # motion stays on (and the panel triggered) this long after a MOAL
ALARM_IDS = 4        # MOAL ids remembered per device (retransmissions are published once)


class Dev:
    __slots__ = ('announced', 'state', 'up', 'until', 'ids')

    def __init__(self):
        self.announced = False
        self.state = None
        self.up = None
        self.until = 0.0
        self.ids = []


class MqttBridge:
    def __init__(self, srv, loop, host, port, user='', password='', ca=None, base='lfcp',
                 prefix='homeassistant', destructive=False, client_id=None):
        self.srv = srv
        self.loop = loop
        self.base = base
        self.prefix = prefix
        self.destructive = destructive
        self.devs = {}
        self.pending = collections.deque()   # devices heard, not yet announced
        self._templates = None
        self._more = asyncio.Event()
        self.published = 0
        self.errors = 0
        self.connected = threading.Event()
        self.refused = None
        self.avail = base + '/bridge/availability'
        import paho.mqtt.client as mqtt  # only a server started with --mqtt needs it
        c = self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                      client_id=client_id or 'lfcp-bridge-%d' % os.getpid())
        c.max_queued_messages_set(0)
        c.max_inflight_messages_set(1000)   # a burst of alarms must not wait for PUBACKs in turn
        if user:
            c.username_pw_set(user, password)
        if ca:
            c.tls_set(ca_certs=ca)
        c.will_set(self.avail, 'offline', qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_socket_open = self._opened
        c.on_socket_close = self._closed
        c.on_socket_register_write = lambda client, ud, sock: self._in_loop(
            loop.add_writer, sock, self._write)
        c.on_socket_unregister_write = lambda client, ud, sock: self._in_loop(
            loop.remove_writer, sock)
        self.host, self.port = host, port
        self._tid = None
        srv.observers.append(self.report)

    # --- paho on the server's event loop ------------------------------------------------------
    # paho's own network thread would hand every message over through the GIL (milliseconds
    # each under load: p99 of an alarm burst was 300 ms); on the loop, a publish is a write.
    def _in_loop(self, fn, *args):
        if threading.get_ident() == self._tid:
            fn(*args)
        else:
            self.loop.call_soon_threadsafe(fn, *args)

    def _opened(self, client, userdata, sock):
        try:    # an alarm is one small packet: no Nagle delay waiting for the broker's ACK
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (AttributeError, OSError):
            pass
        self._in_loop(self.loop.add_reader, sock, self._read)

    def _closed(self, client, userdata, sock):
        self._in_loop(self.loop.remove_reader, sock)
        self._in_loop(self.loop.remove_writer, sock)

    def _read(self):
        self.client.loop_read(64)

    def _write(self):
        self.client.loop_write()

    async def run(self, every=1.0):
        """Connect (and reconnect with backoff), keep-alive, LFCP liveness -> availability, the
        end of the motion hold."""
        import paho.mqtt.client as mqtt
        self._tid = threading.get_ident()
        self._announcing = asyncio.ensure_future(self._announcer())
        delay = 1
        connected = False
        while True:
            if not connected:
                try:
                    await self.loop.run_in_executor(None, self.client.connect, self.host,
                                                    self.port, 30)
                    connected = True
                    delay = 1
                except OSError as e:
                    self.refused = 'cannot connect to %s:%d: %s' % (self.host, self.port, e)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30)
                    continue
            await asyncio.sleep(every)
            if self.client.loop_misc() == mqtt.MQTT_ERR_NO_CONN:
                connected = False
                continue
            self._tick()

    def close(self):
        def go():
            self.client.publish(self.avail, 'offline', qos=1, retain=True)
            self.client.disconnect()
        if self.loop.is_running() and threading.get_ident() != self._tid:
            self.loop.call_soon_threadsafe(go)
        else:
            go()

    # --- the broker side ------------------------------------------------------
    def _on_connect(self, client, userdata, flags, rc, props=None):
        if rc.is_failure:
            self.refused = str(rc)
            self.srv._say('mqtt bridge: broker refused: %s' % rc)
            return
        self.refused = None
        client.publish(self.avail, 'online', qos=1, retain=True)
        for what in ('alarm/set', 'status/press', 'reboot/press'):
            client.subscribe('%s/+/%s' % (self.base, what), qos=1)
        # a broker that restarted has lost the retained messages: announce everything again
        self._reannounce()
        self.connected.set()

    def _on_message(self, client, userdata, msg):
        self._command(msg.topic, msg.payload)

    # --- the LFCP side (the server's loop) ------------------------------------------------------
    def report(self, dev, typ, f):
        """Called by the server for every accepted report, after it has updated `dev` and before
        it answers: whatever goes wrong here must not cost the device its answer."""
        try:
            self._report(dev, typ, f)
        except Exception as e:
            self.errors += 1
            self.srv._say('mqtt bridge: %s %s: %r' % (dev.name, typ, e))

    def _report(self, dev, typ, f):
        d = self.devs.get(dev.name)
        if d is None:
            d = self.devs[dev.name] = Dev()
        if not d.announced:
            d.announced = True          # queued: the announcer publishes config, availability, state
            self.pending.append(dev.name)
            self._more.set()
        elif d.up is False:             # back after an absence (None: still being announced)
            d.up = True
            self._pub(dev.name, 'availability', 'online', retain=True)
        if typ == 'MOAL':
            aid = f[7]
            if aid != '0' and aid in d.ids:
                return
            d.ids.append(aid)
            if len(d.ids) > ALARM_IDS:
                d.ids.pop(0)
            now = time.time()
            d.until = time.monotonic() + HOLD_S
            self._pub(dev.name, 'alarm/event', json.dumps({'time': now, 'text': f[2], 'id': aid}))
            self._pub(dev.name, 'motion', 'ON', retain=True)
            self._pub(dev.name, 'last_alarm', time.strftime('%Y-%m-%dT%H:%M:%S+00:00',
                                                            time.gmtime(now)), retain=True)
        elif typ == 'STAT':
            self._pub(dev.name, 'status', f[2], retain=True)
        if d.up:
            self._state(dev, d)

    def _state(self, dev, d):
        if d.until:
            s = 'triggered'
        elif dev.armed is None:
            s = d.state or 'disarmed'
        else:
            s = 'armed_away' if dev.armed else 'disarmed'
        if s != d.state:
            d.state = s
            self._pub(dev.name, 'alarm', s, retain=True)

    def _tick(self):
        now = time.monotonic()
        for name, d in self.devs.items():
            dev = self.srv.devices.get(name)
            if dev is None or d.up is None:     # gone, or not announced yet
                continue
            up = dev.reachable(self.srv.limit)
            if up != d.up:
                d.up = up
                self._pub(name, 'availability', 'online' if up else 'offline', retain=True)
            if d.until and now >= d.until:
                d.until = 0.0
                self._pub(name, 'motion', 'OFF', retain=True)
                self._state(dev, d)

    def _command(self, topic, payload):
        parts = topic.split('/')
        if len(parts) != 4 or parts[0] != self.base:
            return
        name, what = parts[1], parts[2] + '/' + parts[3]
        text = payload.decode('utf-8', 'replace').strip()
        typ, err = None, None
        if what == 'alarm/set':
            typ = {'ARM_AWAY': 'ENAL', 'DISARM': 'DSAL'}.get(text)
            err = 'payload must be ARM_AWAY or DISARM, got %r' % text[:64]
        elif what in ('status/press', 'reboot/press'):
            typ = ('STAT' if what == 'status/press' else 'RST') if text == 'PRESS' else None
            err = 'payload must be PRESS, got %r' % text[:64]
            if typ == 'RST' and not self.destructive:
                typ, err = None, 'reboot: disabled for MQTT (start the server with --mqtt-destructive)'
        if typ is not None and name not in self.srv.devices:
            typ, err = None, 'no such device: %s' % name
        if typ is None:
            self.errors += 1
            self._pub(name, 'result', json.dumps({'topic': what, 'ok': False, 'error': err}))
            return
        try:
            c = self.srv.queue(name, typ)
        except ValueError as e:
            self._pub(name, 'result', json.dumps({'topic': what, 'ok': False, 'error': str(e)}))
            return
        self._pub(name, 'result', json.dumps({'topic': what, 'ok': True, 'result': 'queued',
                                              'id': c.id, 'type': typ}))

    # --- discovery ------------------------------------------------------------------------------
    def _entities(self, name):
        t = '%s/%s/' % (self.base, name)
        out = [
            ('alarm_control_panel', 'alarm', {
                'name': 'Alarm', 'state_topic': t + 'alarm', 'command_topic': t + 'alarm/set',
                'supported_features': ['arm_away'], 'code_arm_required': False,
                'code_disarm_required': False}),
            ('binary_sensor', 'motion', {'name': 'Motion', 'device_class': 'motion',
                                         'state_topic': t + 'motion'}),
            ('sensor', 'last_alarm', {'name': 'Last alarm', 'device_class': 'timestamp',
                                      'state_topic': t + 'last_alarm'}),
            ('sensor', 'status', {'name': 'Status', 'state_topic': t + 'status',
                                  'entity_category': 'diagnostic'}),
            ('button', 'status', {'name': 'Ask status', 'command_topic': t + 'status/press'}),
        ]
        if self.destructive:
            out.append(('button', 'reboot', {'name': 'Reboot', 'device_class': 'restart',
                                             'command_topic': t + 'reboot/press'}))
        device = {'identifiers': ['lfcp_' + name], 'name': name, 'model': 'ESP32-CAM (LFCP)',
                  'manufacturer': 'esp32cam-alarm'}
        for component, oid, conf in out:
            conf['unique_id'] = 'lfcp_%s_%s' % (name, oid)
            conf['device'] = device
            conf['availability'] = [{'topic': self.avail}, {'topic': t + 'availability'}]
            conf['availability_mode'] = 'all'
            if 'command_topic' in conf:
                conf['qos'] = 1
        return out

    def _announce(self, name):
        if self._templates is None:     # JSON once, the name substituted per device
            self._templates = [('%s/%s/lfcp_%s/%s/config' % (self.prefix, component, MARK, oid),
                                json.dumps(conf)) for component, oid, conf in self._entities(MARK)]
        for topic, conf in self._templates:
            self.client.publish(topic.replace(MARK, name), conf.replace(MARK, name), qos=0,
                                retain=True)
            self.published += 1

    async def _announcer(self):
        """New devices are announced here, ANNOUNCE_BATCH at a time with a turn for the datagrams
        between batches: 10,000 devices heard at once must not hold up an alarm."""
        while True:
            if not self.pending:
                # The device table is long-lived: keep it out of the collector's full passes
                # (55 ms each with 10,000 devices, a stall every alarm in flight would wait for).
                gc.freeze()
                self._more.clear()
                await self._more.wait()
                continue
            for _ in range(min(ANNOUNCE_BATCH, len(self.pending))):
                name = self.pending.popleft()
                d = self.devs[name]
                self._announce(name)
                dev = self.srv.devices.get(name)
                d.up = bool(dev and dev.reachable(self.srv.limit))
                self._pub(name, 'availability', 'online' if d.up else 'offline', retain=True)
                if dev:
                    self._state(dev, d)
            await asyncio.sleep(0)

    def _reannounce(self):
        for name, d in self.devs.items():
            if name in self.pending:
                continue
            self._announce(name)
            if d.up is not None:
                self._pub(name, 'availability', 'online' if d.up else 'offline', retain=True)
            if d.state:
                self._pub(name, 'alarm', d.state, retain=True)

    def _pub(self, name, what, payload, retain=False):
        """Retained state goes at QoS 0: all of it is published again after a reconnection, and
        10,000 devices' announcements at QoS 1 would queue the alarms behind their PUBACKs.
        Events and command results go at QoS 1."""
        self.client.publish('%s/%s/%s' % (self.base, name, what), payload, qos=0 if retain else 1,
                            retain=retain)
        self.published += 1

    def stats(self):
        return {'connected': self.client.is_connected(), 'devices': len(self.devs),
                'published': self.published, 'errors': self.errors, 'refused': self.refused}


def add_arguments(p):
    p.add_argument('--mqtt', help='bridge to this MQTT broker, host:port')
    p.add_argument('--mqtt-user', default='')
    p.add_argument('--mqtt-ca', help='CA file to verify the broker (TLS)')
    p.add_argument('--mqtt-base', default='lfcp')
    p.add_argument('--mqtt-prefix', default='homeassistant')
    p.add_argument('--mqtt-destructive', action='store_true', help='offer the reboot button')


def start(srv, loop, args):
    """The bridge for `serve --mqtt ...` (the password comes from $MQTT_PASSWORD), or None."""
    if not args.mqtt:
        return None
    host, port = args.mqtt.rsplit(':', 1)
    b = MqttBridge(srv, loop, host, int(port), args.mqtt_user, os.environ.get('MQTT_PASSWORD', ''),
                   args.mqtt_ca, args.mqtt_base, args.mqtt_prefix, args.mqtt_destructive)
    loop.create_task(b.run())
    return b
