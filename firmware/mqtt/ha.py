"""Home Assistant over MQTT: discovery, state on change, commands through the command layer.

One device with its entities, announced by retained config messages under the discovery prefix
(docs/mqtt.md lists the topics). Availability rides on the client's last will. What was
announced is kept in mqtt.json, so an entity (or the whole mqtt section) that goes away gets its
empty retained config and disappears from Home Assistant.

Commands come only from this device's command topics; each runs a command of the command table
(arm, disarm, camera_on/off, reboot, alarm_test) with source 'mqtt', one at a time, and its
answer or error goes to <base>/result. Reboot is offered only with mqtt.allow_destructive.
"""
import asyncio
import json
import time

from firmware.core import clock, store
from firmware.core.commands import CommandError
from firmware.core.events import ALARM, ARMED, CAMERA
from firmware.mqtt.client import Client

STATE = 'mqtt.json'
VITALS_EVERY_S = 10         # how often the vitals are looked at; published only when they move
RSSI_STEP = 3
HEAP_STEP = 4096
QUEUE = 4
MAX_ARG = 64                # longest payload quoted back in an error


def iso(t):
    """ISO 8601 for Home Assistant's timestamp sensor; 'None' (its "unknown") while the
    board's clock is not set."""
    if not clock.is_set(t):
        return 'None'
    y, mo, d, h, mi, s = time.gmtime(int(t))[:6]
    return '%04d-%02d-%02dT%02d:%02d:%02d+00:00' % (y, mo, d, h, mi, s)


class HomeAssistant:
    def __init__(self, cfg, log, bus, commands, cam=None, alarm=None, vitals=None, config_url=None):
        m = self.m = cfg.mqtt
        self.log = log
        self.commands = commands
        self.cam = cam
        self.alarm = alarm
        self.vitals = vitals                    # fn() -> {'rssi', 'ssid', 'heap_free', 'uptime_s'}
        self.clips = cfg.storage.sdcard         # the clip count, where clips can exist
        self.name = cfg.device.name
        self.base = m.topic or 'esp32cam/' + self.name
        self.avail = self.base + '/availability'
        self.config_url = config_url            # fn() -> the admin page's URL (address may change)
        self.cleanup_only = not m.host         # section removed: only take the entities away
        self.queue = []
        self._work = asyncio.Event()
        self.motion_until = None
        self.last_vitals = None
        self.announced = False
        self.saved = self._load()
        if self.cleanup_only:
            s = self.saved.get('broker') or {}
            m = self.m = _Broker(s)
            if m.host:
                log('mqtt: section removed: taking the entities off', m.host)
            else:                   # a state file naming no broker: nothing can be done
                log.warn('mqtt:', STATE, 'names no broker: removed')
                _remove(STATE)
        self.client = Client(m, log, bus, 'esp32cam-' + self.name, (self.avail, b'offline'),
                             self._message, self._connected)
        if not self.cleanup_only:
            for t in self._command_topics():
                self.client.subscribe(t)
            bus.on(ARMED, lambda state, why: self._publish_alarm())
            bus.on(ALARM, self._on_alarm)
            bus.on(CAMERA, lambda state: self._publish_camera())

    def _load(self):
        try:
            s = store.load(STATE, {}) or {}
        except ValueError as e:
            self.log.error('mqtt:', e)
            s = {}
        return s if isinstance(s, dict) else {}

    # --- the entities --------------------------------------------------------------------------
    def _entities(self):
        """(component, object id, config without the common keys)."""
        b = self.base
        out = [
            ('alarm_control_panel', 'alarm', {
                'name': 'Alarm', 'state_topic': b + '/alarm', 'command_topic': b + '/alarm/set',
                'supported_features': ['arm_away'], 'code_arm_required': False,
                'code_disarm_required': False, 'payload_arm_away': 'ARM_AWAY',
                'payload_disarm': 'DISARM'}),
            ('binary_sensor', 'motion', {
                'name': 'Motion', 'device_class': 'motion', 'state_topic': b + '/motion',
                'json_attributes_topic': b + '/motion/attributes'}),
            ('camera', 'photo', {'name': 'Alarm photo', 'topic': b + '/photo'}),
            ('sensor', 'rssi', self._vital('Wi-Fi signal', 'rssi', 'signal_strength', 'dBm')),
            ('sensor', 'ssid', self._vital('Wi-Fi network', 'ssid', None, None)),
            ('sensor', 'heap_free', self._vital('Heap free', 'heap_free', 'data_size', 'B')),
            ('sensor', 'uptime', self._vital('Uptime', 'uptime_s', 'duration', 's')),
            ('sensor', 'last_alarm', {'name': 'Last alarm', 'device_class': 'timestamp',
                                      'state_topic': b + '/last_alarm'}),
            ('button', 'take_photo', {'name': 'Take photo', 'command_topic': b + '/photo/take'}),
            ('button', 'alarm_test', {'name': 'Test alarm', 'command_topic': b + '/alarm_test/press'}),
            ('switch', 'camera', {'name': 'Camera', 'state_topic': b + '/camera',
                                  'command_topic': b + '/camera/set'}),
        ]
        if self.clips:
            out.append(('sensor', 'clips', self._vital('Clips recorded', 'clips', None, None)))
        if self.m.allow_destructive:
            out.append(('button', 'reboot', {'name': 'Reboot', 'device_class': 'restart',
                                             'command_topic': b + '/reboot/press'}))
        return out

    def _vital(self, name, key, device_class, unit):
        c = {'name': name, 'state_topic': self.base + '/vitals',
             'value_template': '{{ value_json.%s }}' % key, 'entity_category': 'diagnostic'}
        if device_class:
            c['device_class'] = device_class
        if unit:
            c['unit_of_measurement'] = unit
            c['state_class'] = 'measurement'
        return c

    def _command_topics(self):
        b = self.base
        # reboot/press is listened to even when refused: a button left over in a dashboard gets
        # an answer saying why, not silence
        return [b + '/alarm/set', b + '/photo/take', b + '/alarm_test/press', b + '/camera/set',
                b + '/reboot/press']

    def _config_topic(self, component, oid):
        return '%s/%s/%s/%s/config' % (self.m.discovery_prefix, component, self.name, oid)

    # --- on (re)connection -------------------------------------------------------------------
    def _connected(self):
        c = self.client
        if self.cleanup_only:
            for t in self.saved.get('topics', ()):
                c.publish(t, b'', retain=True, qos=1, remember=False)
            c.publish(self.avail, b'', retain=True, qos=1, remember=False)
            self.announced = True
            return
        c.publish(self.avail, 'online', retain=True, qos=1)
        device = {'identifiers': ['esp32cam-alarm_' + self.name], 'name': self.name,
                  'model': 'ESP32-CAM', 'manufacturer': 'esp32cam-alarm',
                  'sw_version': _version()}
        if self.config_url:
            device['configuration_url'] = self.config_url()
        topics = []
        for component, oid, conf in self._entities():
            conf['unique_id'] = '%s_%s' % (self.name, oid)
            conf['availability_topic'] = self.avail
            conf['device'] = device
            if 'command_topic' in conf:
                conf['qos'] = 1
            t = self._config_topic(component, oid)
            topics.append(t)
            c.publish(t, json.dumps(conf), retain=True, qos=1, remember=False)
        for t in self.saved.get('topics', ()):
            if t not in topics:                 # an entity that is gone: take it off
                c.publish(t, b'', retain=True, qos=1, remember=False)
        if not self.announced:
            self._save(topics)
            self._publish_alarm()
            self._publish_motion(False)
            self._publish_camera()
            self._publish_vitals(force=True)
        self.announced = True

    def _save(self, topics):
        m = self.m
        broker = {'host': m.host, 'port': m.port, 'user': m.user, 'password': m.password,
                  'tls_ca': m.tls_ca, 'keepalive_s': m.keepalive_s, 'timeout_s': m.timeout_s}
        data = {'broker': broker, 'topics': topics}
        if data != self.saved:
            try:
                store.save(STATE, data)
                self.saved = data
            except OSError as e:
                self.log.error('mqtt: cannot save', STATE, e)

    # --- state, published when it changes ----------------------------------------------------------
    def _alarm_state(self):
        if self.motion_until is not None:
            return 'triggered'
        return 'disarmed' if self.alarm.state == 'disarmed' else 'armed_away'

    def _publish_alarm(self):
        self.client.publish(self.base + '/alarm', self._alarm_state(), retain=True, qos=1)

    def _publish_motion(self, on, score=0):
        c = self.client
        c.publish(self.base + '/motion/attributes', json.dumps({'score': score}), retain=True)
        c.publish(self.base + '/motion', 'ON' if on else 'OFF', retain=True, qos=1)

    def _publish_camera(self):
        self.client.publish(self.base + '/camera', 'ON' if self.cam.state == 'on' else 'OFF',
                            retain=True, qos=1)

    def _publish_vitals(self, force=False):
        v = self.vitals()
        last = self.last_vitals
        if not force and last and last.get('ssid') == v.get('ssid') and \
                abs((last.get('rssi') or 0) - (v.get('rssi') or 0)) < RSSI_STEP and \
                abs(last['heap_free'] - v['heap_free']) < HEAP_STEP:
            return
        self.last_vitals = v
        self.client.publish(self.base + '/vitals', json.dumps(v), retain=True)

    def _on_alarm(self, ev):
        c = self.client
        c.publish(self.base + '/last_alarm', iso(ev.time), retain=True, qos=1)
        if ev.frame and c.connected:
            # Retained for a Home Assistant that starts later, but not kept here: a frame is
            # tens of KB of heap; the outbox holds it (shared, not copied) until it is sent,
            # and only while connected (an outage must not pin a frame in the heap).
            c.publish(self.base + '/photo', ev.frame, retain=True, remember=False)
        if ev.reason == 'motion':
            self.motion_until = time.ticks_add(time.ticks_ms(), self.m.motion_hold_s * 1000)
            self._publish_motion(True, ev.score)
            self._publish_alarm()

    # --- commands --------------------------------------------------------------------------------
    def _message(self, topic, payload):
        """Called by the client's reader: never blocks, never raises."""
        b = self.base
        what = topic[len(b) + 1:] if topic.startswith(b + '/') else topic
        try:
            text = payload.decode().strip()
        except UnicodeError:
            text = None
        shown = repr(payload[:MAX_ARG])
        job = None
        if what == 'alarm/set':
            job = {'ARM_AWAY': 'arm', 'DISARM': 'disarm'}.get(text)
            err = 'alarm/set: payload must be ARM_AWAY or DISARM, got %s' % shown
        elif what == 'camera/set':
            job = {'ON': 'camera_on', 'OFF': 'camera_off'}.get(text)
            err = 'camera/set: payload must be ON or OFF, got %s' % shown
        elif what in ('photo/take', 'alarm_test/press', 'reboot/press'):
            job = what.split('/')[0] if text == 'PRESS' else None
            err = '%s: payload must be PRESS, got %s' % (what, shown)
            if job == 'reboot' and not self.m.allow_destructive:
                job, err = None, 'reboot: disabled for MQTT (mqtt.allow_destructive is false)'
        else:
            err = 'not a command topic: ' + what
        if job is None:
            self._result(what, False, err)
        elif len(self.queue) >= QUEUE:
            self._result(what, False, 'busy: %d commands waiting, %s dropped' % (QUEUE, job))
        else:
            self.queue.append((what, job))
            self._work.set()

    def _result(self, what, ok, text):
        if not ok:
            self.log.warn('mqtt:', text)
        self.client.publish(self.base + '/result', json.dumps(
            {'topic': what, 'ok': ok, ('result' if ok else 'error'): text}))

    async def run_commands(self):
        while True:
            if not self.queue:
                self._work.clear()
                await self._work.wait()
                continue
            what, name = self.queue.pop(0)
            try:
                if name == 'photo':
                    text = await self._photo()
                else:
                    text = await self.commands.run(name, {}, source='mqtt')
                self._result(what, True, text)
            except CommandError as e:
                self._result(what, False, '%s: %s' % (name, e.args[0] if e.args else 'failed'))

    async def _photo(self):
        """The camera entity's picture on request: a fresh snapshot, not kept after sending."""
        try:
            frame = await self.cam.snapshot()
        except OSError as e:
            raise CommandError('no photo: %s' % (e.args[0] if e.args else 'no camera'))
        if not self.client.connected:
            raise CommandError('no photo: not connected to the broker')
        self.client.publish(self.base + '/photo', frame, retain=True, remember=False)
        frame = None
        return 'photo published'

    async def run_state(self):
        """Ends the motion hold and looks at the vitals; publishes only what changed."""
        n = 0
        while True:
            await asyncio.sleep(1)
            if self.motion_until is not None and \
                    time.ticks_diff(time.ticks_ms(), self.motion_until) >= 0:
                self.motion_until = None
                self._publish_motion(False)
                self._publish_alarm()
            n += 1
            if n >= VITALS_EVERY_S and self.announced:
                n = 0
                self._publish_vitals()

    async def run_cleanup(self):
        """Section removed: wait until the empty configs are out, then forget mqtt.json."""
        while not (self.announced and not self.client.order):
            await asyncio.sleep(1)
        await asyncio.sleep(1)
        _remove(STATE)
        self.log('mqtt: entities removed from', self.m.host)
        while True:
            await asyncio.sleep(3600)

    def status(self):
        s = self.client.status()
        s['base'] = self.base
        s['announced'] = self.announced
        return s


class _Broker:
    """The broker settings kept in mqtt.json, shaped like cfg.mqtt (for the clean-up only)."""

    def __init__(self, s):
        self.host = s.get('host', '')
        self.port = s.get('port', 1883)
        self.user = s.get('user', '')
        self.password = s.get('password', '')
        self.tls_ca = s.get('tls_ca', '')
        self.keepalive_s = s.get('keepalive_s', 60)
        self.timeout_s = s.get('timeout_s', 10)
        self.topic = ''
        self.discovery_prefix = 'homeassistant'
        self.allow_destructive = False
        self.motion_hold_s = 10


def _remove(path):
    import os
    try:
        os.remove(path)
    except OSError:
        pass


def _version():
    try:
        from firmware.version import VERSION
        return VERSION
    except ImportError:
        return 'unknown'
