"""The composition root: the only module that knows every service and wires them together."""
import asyncio
import gc
import sys

from firmware.alarm.panel import Alarm
from firmware.camera.service import CameraService
from firmware.core import aio, clock, store
from firmware.core.commands import BadArgs, CommandError, Commands
from firmware.core.events import ALARM, CLIP, Bus
from firmware.core.log import Log
from firmware.core.recovery import Recovery
from firmware.core.supervisor import Supervisor
from firmware.net import addresses
from firmware.net.internet import Internet
from firmware.net.ntp import TimeSync
from firmware.net.wifi import Wifi
from firmware.version import VERSION
from firmware.web.access import ControlGate
from firmware.web.admin import AdminServer
from firmware.web.common import Budget, Listener, allow_origins, quiet
from firmware.web.control import ControlServer
from firmware.web.stream import StreamServer


def camera_driver(camera):
    """What CameraService drives: micropython-camera-driver's module as it is, or
    micropython-camera-API's (it offers a `Camera` class) through its adapter."""
    if hasattr(camera, 'Camera'):
        from firmware.camera.driver_class import ClassCamera
        return ClassCamera(camera)
    return camera


class App:
    """LFCP, Telegram and UPnP load only when configured or first used: a feature that is off
    costs no heap (together ~80 KB of the ESP32's)."""

    def __init__(self, cfg, missing=None, driver=None):
        import camera
        import machine
        import network
        self.cfg = cfg
        clock.start()
        self.log = log = Log(cfg.log.lines)
        self.bus = bus = Bus(log)
        self.commands = Commands(log)
        self.recovery = Recovery(machine, log)
        self.sup = sup = Supervisor(log, cfg.watchdog.timeout_s, machine,
                                    on_stall=self.recovery.note_stall)
        self.wifi = Wifi(network, cfg.wifi, log, bus, self.recovery, beat=lambda: sup.beat('wifi'))
        self.internet = Internet(cfg.internet, log, bus)
        self.ntp = None
        if cfg.time.servers:
            sta = self.wifi.sta
            self.ntp = TimeSync(cfg.time, log, bus, machine.RTC(), lambda: addresses.gateway(sta))
        self.cam = CameraService(driver or camera_driver(camera), cfg.camera, log, bus, beat=lambda: sup.beat('camera'),
                                 on_give_up=lambda why: self.recovery.reboot_soon(why),
                                 flash=self._flash(machine))
        self.running = False        # True once run() has spawned the tasks
        self.mgmt = None
        if cfg.lfcp.key or cfg.lfcp.legacy:
            from firmware.lfcp.client import LfcpClient
            self.mgmt = LfcpClient(cfg, log, bus, self.commands, bind=cfg.http.bind,
                                   beat=lambda: sup.beat('lfcp'))
            log.sinks.append(self.mgmt.log_sink)
            bus.on(ALARM, self._alarm_to_management)
        pir = None
        if cfg.alarm.pir != 'off':
            from firmware.alarm.pir import Pir
            pir = Pir(machine.Pin(13, machine.Pin.IN), cfg.alarm.pir)   # free on the AI-Thinker
        self.alarm = Alarm(self.cam, cfg.alarm, log, bus, internet=self.internet.check,
                           management_configured=self.mgmt is not None and bool(cfg.lfcp.servers),
                           missing=missing, pir=pir)
        self.telegram = None
        if cfg.telegram.token or store.exists('telegram.json'):
            self._telegram()
        self.port_forward = None
        self.mqtt = None
        if cfg.mqtt.host or store.exists('mqtt.json'):   # mqtt.json: entities to take off the broker
            self._mqtt()
        if store.exists('upnp.json'):     # a port may be left open on the router: clean up at boot
            self._port_forward()
        self.card = self.clips = self.admin = None
        self.clip_routes = False
        if cfg.storage.sdcard:
            from firmware.storage.card import Card
            self.card = Card(machine, cfg.storage, log)
            self.card.users.append(self._card_mounted)   # mounted by its task, once running
            bus.on(ALARM, self._alarm_clip)
        self.stream = StreamServer(self.cam, cfg.http, log, guard=self._guard)
        allow_origins(cfg.http.cors_origins)
        self.admin = AdminServer(cfg.admin, self.commands, self.status, log,
                                 photo=lambda: self.alarm.photo, lazy={
            'update': ('firmware.web.update', (cfg.update, log, self.update_status,
                                               self.recovery.reboot_soon, [])),
            'settings': ('firmware.web.settings', ('config.json', cfg, log,
                                                   lambda: self.wifi.state == 'connected', {}))})
        # microdot checks the body size before any handler: a bundle may be the whole flash
        aio.large_bodies(self.admin.app, ('/update',), 4 << 20)
        self.gate = ControlGate(cfg.control.open, self.alarm.armed,
                                self.admin.login if cfg.admin.password else None, log)
        self.control = ControlServer(self.cam, cfg.http, log, guard=self._guard, gate=self.gate)
        log.secret(cfg.update.key)
        self.update = {}
        self.trial = None
        self.listeners = []
        self.budget = Budget(cfg.http)
        quiet(log)
        self._register()

    def _flash(self, machine):
        """The flash LED's driver, or None: camera.flash_pin null/-1, or the pin refused PWM."""
        pin = self.cfg.camera.flash_pin
        if pin is None or pin < 0:
            return None
        from firmware.camera.flash import FREQ, Flash
        try:
            pwm = machine.PWM(machine.Pin(pin), freq=FREQ, duty_u16=0)   # dark from the start
        except (ValueError, OSError, RuntimeError) as e:
            self.log.error('flash: no LED on GPIO %d: %s' % (pin, e))
            return None
        return Flash(pwm, self.cfg.camera)

    # --- the optional services, built on first need ------------------------------------------
    def _telegram(self):
        if self.telegram is None:
            from firmware.telegram.bot import Telegram
            self.telegram = Telegram(self.cfg, self.log, self.bus, self.commands, self.cam)
            if self.running:
                self._spawn_telegram()
        return self.telegram

    def _spawn_telegram(self):
        self.sup.spawn('telegram-send', self.telegram.run_sender)
        self.sup.spawn('telegram-poll', self.telegram.run_poller)

    def _mqtt(self):
        from firmware.mqtt.ha import HomeAssistant
        h = self.cfg.http
        self.mqtt = HomeAssistant(
            self.cfg, self.log, self.bus, self.commands, self.cam, self.alarm, vitals=self._vitals,
            config_url=lambda: 'http://%s:%d/' % (self.wifi.address(), h.admin_port))
        if not self.mqtt.m.host:     # only a leftover mqtt.json that names no broker
            self.mqtt = None

    def _vitals(self):
        w = self.wifi.status()
        gc.collect()
        return {'rssi': w.get('rssi'), 'ssid': w.get('upstream'), 'heap_free': gc.mem_free(),
                'uptime_s': clock.uptime_s(),
                'clips': self.clips.stats['clips'] if self.clips else 0}

    def _port_forward(self):
        if self.port_forward is None:
            from firmware.net import addresses
            from firmware.remote.port_forward import PortForward
            sta = self.wifi.sta
            self.port_forward = pf = PortForward(
                self.cfg, self.log, lan=lambda: addresses.lan(sta),
                gateway=lambda: addresses.gateway(sta), notify=self._notify, bus=self.bus)
            self.recovery.on_shutdown('upnp', pf.shutdown)
            if self.running:
                self.sup.spawn('upnp', pf.run)
        return self.port_forward

    def _card_mounted(self, mounted):
        """The clip recorder loads with the first card that mounts (no card: no heap, no frames)."""
        if not mounted:
            return
        if not self.clip_routes:
            from firmware.web.clips import mount as mount_clips
            mount_clips(self.admin.app, lambda: self.clips, self.card, self.log)
            self.clip_routes = True
        if self.clips is None and self.cfg.clips.enabled and self.cam.jpeg:   # GRAYSCALE: no JPEG
            from firmware.storage.clips import Recorder
            alarm = self.alarm
            self.clips = Recorder(self.cam, self.card, self.cfg.clips, self.log,
                                  motion=lambda: alarm.detector is not None and alarm.detector.triggered,
                                  on_clip=lambda info: self.bus.emit(CLIP, info))
            self.bus.on(CLIP, self._clip_saved)
            self.clips.repair()
            if self.running:
                self._spawn_clips()

    def _spawn_clips(self):
        self.sup.spawn('clips-in', self.clips.run_collector)
        self.sup.spawn('clips-out', self.clips.run_writer)

    def _alarm_clip(self, ev):
        if self.clips:
            try:
                self.clips.trigger(ev.reason)
            except OSError as e:
                self.log.warn('clip:', e.args[0] if e.args else e)

    def _clip_saved(self, info):
        if self.mgmt:
            self.mgmt.report('clip_saved ' + info['path'])
        if self.telegram and self.cfg.clips.telegram and info['reason'] != 'manual':
            self.telegram.send_clip(info['path'], info)

    def _guard(self, req):
        return self.port_forward.guard(req) if self.port_forward else None

    def _notify(self, text):
        if self.telegram:
            return self.telegram.send_message(text)

    def _alarm_to_management(self, ev):
        self.mgmt.alarm('alarm_test' if ev.reason == 'test' else 'esp32_cam_motion_detected')

    # --- update over the air -------------------------------------------------------------
    def update_status(self):
        s = dict(self.update)
        s['version'] = VERSION
        s['enabled'] = bool(self.cfg.update.key)
        if self.trial:
            s['trial'] = not self.trial.confirmed
            s['problem'] = self.trial.problem
        return s

    def _start_update(self):
        """ota.json (boot.py's choice): the update status; the trial of a new version, or the
        report of a rollback. firmware/ota/trial.py is loaded only then."""
        try:
            st = store.load('ota.json') or {}
        except ValueError:
            st = {}
        back = st.get('rolled_back')
        self.update = {'slot': st.get('active', ''), 'trial': bool(st.get('trial')),
                       'previous_version': st.get('previous_version')}
        if back is not None:
            self.update['rolled_back'] = {'version': st.get('version'), 'slot': back}
        if back is not None and not st.get('reported'):
            from firmware.ota import trial
            trial.report(st, self.log, self._notify)
        if st.get('trial'):
            import machine

            from firmware.ota import trial
            self.trial = trial.Trial(self.log, machine, self.sup, self.listeners, self.wifi,
                                     self.cfg.update.confirm_s)
            self.sup.spawn('update-trial', self.trial.run)

    # --- commands shared by HTTP, LFCP and Telegram ------------------------------------------
    def _register(self):
        c = self.commands
        cam = self.cam
        rec = self.recovery

        async def camera_on(args):
            cam.turn_on()
            return 'camera on'

        async def camera_off(args):
            cam.turn_off()
            return 'camera off'

        async def reboot(args):
            rec.reboot_soon('requested')
            return 'rebooting'

        async def sleep(args):
            try:
                seconds = int(args.get('seconds', 0))
            except (ValueError, TypeError, OverflowError):   # "abc", null, 1.5e400 (inf)
                raise BadArgs('seconds must be an integer')
            if not 1 <= seconds <= 86400 * 7:
                raise BadArgs('seconds must be 1..604800')
            rec.deepsleep_soon(seconds, 'requested')
            return 'sleeping for %d s' % seconds

        async def status(args):
            gc.collect()
            return '%s: camera %s, alarm %s, %d viewers, up %d s, heap free %d, %s' % (
                self.cfg.device.name, cam.state, self.alarm.state, len(self.stream.viewers),
                clock.uptime_s(), gc.mem_free(), clock.text())

        c.register('camera_on', camera_on)
        c.register('camera_off', camera_off)
        c.register('reboot', reboot)
        c.register('sleep', sleep)
        c.register('status', status)
        c.register('arm', self.alarm.arm)
        c.register('disarm', self.alarm.disarm)
        c.register('alarm_test', self.alarm.test)
        async def photo(args):
            if self.telegram is None:
                raise CommandError('Telegram is not configured')
            return await self.telegram.cmd_photo(args)

        async def telegram_set(args):
            return await self._telegram().cmd_set(args)

        async def open_port(args):
            return await self._port_forward().open(args)

        async def close_port(args):
            return await self._port_forward().close(args)

        async def record_start(args):
            if self.clips is None:
                raise CommandError('no clips: card %s' % (self.card.state if self.card else 'off'))
            try:
                return self.clips.trigger('manual', manual=True)
            except OSError as e:
                raise CommandError(e.args[0] if e.args else str(e))

        async def record_stop(args):
            if self.clips is None:
                raise CommandError('not recording')
            return self.clips.stop()

        c.register('record_start', record_start)
        c.register('record_stop', record_stop)
        c.register('photo', photo)
        c.register('telegram_set', telegram_set)
        c.register('open', open_port)
        c.register('close', close_port)

    # --- status of the whole device -----------------------------------------------------------
    def status(self):
        gc.collect()
        return {
            'device': self.cfg.device.name,
            'version': VERSION,
            'update': self.update_status(),
            'uptime_s': clock.uptime_s(),
            'time': clock.text(),
            'time_source': 'ntp ' + clock.source[0] if clock.source[0] else 'rtc' if clock.is_set() else None,
            'ntp': self.ntp.status() if self.ntp else {'servers': 0},
            'heap_free': gc.mem_free(), 'heap_used': gc.mem_alloc(),
            'boot': self.recovery.status(),
            'camera': self.cam.status(),
            'flash': self.cam.flash.status() if self.cam.flash else {'pin': None},
            'stream': self.stream.status(),
            'alarm': self.alarm.status(),
            'wifi': self.wifi.status(),
            'internet': self.internet.status(),
            'lfcp': self.mgmt.status() if self.mgmt else {'enabled': False},
            'telegram': self.telegram.status() if self.telegram else {'configured': False},
            'upnp': self.port_forward.status() if self.port_forward else {'open': False},
            'mqtt': self.mqtt.status() if self.mqtt else {'configured': False},
            'card': self.card.status() if self.card else {'state': 'off'},
            'clips': self.clips.status() if self.clips else {'enabled': False},
            'tasks': self.sup.status(),
            'supervisor': self.sup.report(),
            'admin_denied': self.admin.denied,
            'login': self.admin.login.status(),
            'control_refused': self.gate.refused,
            'connections': self.budget.status(),
            'log': [l[2] for l in self.log.tail(20)],
            'evidence': [[clock.unix(l[0]), l[2]] for l in self.log.evidence],
        }

    # --- run ------------------------------------------------------------------------------
    async def run(self):
        h = self.cfg.http
        sup = self.sup
        self.recovery.report()
        sup.spawn('wifi', self.wifi.run, critical=True)
        sup.spawn('camera', self.cam.run, critical=True)
        sup.spawn('stream-reaper', self.stream.reap)
        sup.spawn('motion', self.alarm.run)
        sup.spawn('auto-arm', self.alarm.auto_arm)
        sup.spawn('internet', self.internet.run)
        if self.ntp:
            sup.spawn('ntp', self.ntp.run)
        else:
            self.log.warn('time: no NTP servers (time.servers): the clock stays unset')
        self.running = True
        if self.mgmt:
            sup.spawn('lfcp', self.mgmt.run, critical=self.mgmt.enabled)
        else:
            self.log.warn('lfcp: off: set lfcp.key (or lfcp.legacy for plain servers)')
        if self.telegram:
            self._spawn_telegram()
        if self.port_forward:
            sup.spawn('upnp', self.port_forward.run)
        if self.mqtt:
            sup.spawn('mqtt', self.mqtt.client.run)
            if self.mqtt.cleanup_only:
                sup.spawn('mqtt-cleanup', self.mqtt.run_cleanup)
            else:
                sup.spawn('mqtt-commands', self.mqtt.run_commands)
                sup.spawn('mqtt-state', self.mqtt.run_state)
        if self.card:
            sup.spawn('card', self.card.run)
        self._start_update()
        free = aio.free_sockets()
        if self.budget.fit(free):
            self.log.warn('http: the board has %d sockets free: the camera ports share %d, the '
                          'admin port keeps %d (http.max_connections %d, admin_reserve %d do not '
                          'fit)' % ((free,) + self.budget.caps + (h.max_connections, h.admin_reserve)))
        for name, app, port in (('control', self.control.app, h.control_port),
                                ('stream', self.stream.app, h.stream_port),
                                ('admin', self.admin.app, h.admin_port)):
            listener = Listener(app, h.bind, port, h.backlog, self.log, self.budget,
                                admin=app is self.admin.app, streams=app is self.stream.app,
                                on_connect=self.stream.make_room if app is self.stream.app else None)
            self.listeners.append(listener)
            sup.spawn('http-' + name, listener.run)
        sup.spawn('http-timeouts', self.budget.reap)
        self.log('listening: control :%d, stream :%d, admin :%d' % (
            h.control_port, h.stream_port, h.admin_port))
        if not self.cfg.admin.password:
            self.log.warn('admin server disabled: set admin.password in config.json')
        gc.collect()
        while True:
            await asyncio.sleep(3600)


def load_config(path):
    """Validate config.json, then drop the schema and its checks from the heap (~20 KB)."""
    import firmware.config
    from firmware.config import schema
    try:
        cfg = schema.load(path)
    except schema.ConfigError as e:
        # Not sys.exit(): a SystemExit out of main.py is a soft reset on the ESP32, and the board
        # would boot, refuse and reboot for ever. Returning leaves it at the REPL, for mpremote.
        print(str(e))
        print('config refused: fix config.json (mpremote edit :config.json) and reset')
        cfg = None
    del sys.modules['firmware.config.schema']
    del firmware.config.schema
    return cfg


def boot_check():
    """Why the detection cannot run on this MicroPython (None: it can); the check leaves the heap
    before the objects that live for good are made."""
    import firmware.core
    from firmware.core import compat
    missing = compat.detection_missing()
    del sys.modules['firmware.core.compat']
    del firmware.core.compat
    return missing


def main(path='config.json'):
    if store.exists('maintenance'):
        # `make deploy` is copying files: no watchdog may reset the board meanwhile
        print('maintenance boot: no watchdog, no servers; the REPL is free for mpremote.')
        print('to start the firmware: mpremote rm :maintenance + reset')
        return
    # What is loaded for good and what only for the boot, in an order that leaves the least
    # garbage between the objects that stay (a VGA frame needs ~31 KB in one piece).
    missing = boot_check()
    import camera
    driver = camera_driver(camera)
    cfg = load_config(path)
    if cfg is None:
        return
    gc.collect()
    app = App(cfg, missing, driver)
    # Collect between the boot phases so the objects that live for good pack at the bottom of
    # the heap, leaving one large free block for the frames (a VGA JPEG needs ~31 KB in one piece).
    gc.collect()
    asyncio.run(app.run())
