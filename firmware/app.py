"""The composition root: the only module that knows every service and wires them together."""
import asyncio
import gc
import os
import sys
import time

from firmware.alarm.panel import Alarm
from firmware.camera.service import CameraService
from firmware.core.commands import BadArgs, CommandError, Commands
from firmware.core.events import ALARM, Bus
from firmware.core.log import Log
from firmware.core.recovery import Recovery
from firmware.core.supervisor import Supervisor
from firmware.net.internet import Internet
from firmware.net.wifi import Wifi
from firmware.web.admin import AdminServer
from firmware.web.common import Listener, quiet
from firmware.web.control import ControlServer
from firmware.web.stream import StreamServer


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


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
        self.started = time.time()
        self.log = log = Log(cfg.log.lines)
        self.bus = bus = Bus(log)
        self.commands = Commands(log)
        self.recovery = Recovery(machine, log)
        self.sup = sup = Supervisor(log, cfg.watchdog.timeout_s, machine,
                                    on_stall=self.recovery.note_stall)
        self.wifi = Wifi(network, cfg.wifi, log, bus, self.recovery, beat=lambda: sup.beat('wifi'))
        self.internet = Internet(cfg.internet, log, bus)
        self.cam = CameraService(driver or camera_driver(camera), cfg.camera, log, bus, beat=lambda: sup.beat('camera'),
                                 on_give_up=lambda why: self.recovery.reboot_soon(why))
        self.running = False        # True once run() has spawned the tasks
        self.mgmt = None
        if cfg.lfcp.key or cfg.lfcp.legacy:
            from firmware.lfcp.client import Management
            self.mgmt = Management(cfg, log, bus, self.commands, bind=cfg.http.bind,
                                   beat=lambda: sup.beat('lfcp'))
            log.sinks.append(self.mgmt.log_sink)
            bus.on(ALARM, self._alarm_to_management)
        self.alarm = Alarm(self.cam, cfg.alarm, log, bus, internet=self.internet.check,
                           management_configured=self.mgmt is not None and bool(cfg.lfcp.servers),
                           missing=missing)
        self.telegram = None
        if cfg.telegram.token or exists('telegram.json'):
            self._telegram()
        self.exposure = None
        if exists('upnp.json'):     # a port may be left open on the router: clean up at boot
            self._exposure()
        self.stream = StreamServer(self.cam, cfg.http, log, guard=self._guard)
        self.control = ControlServer(self.cam, cfg.http, log, guard=self._guard)
        self.admin = AdminServer(cfg.admin, self.commands, self.status, log)
        self.listeners = []
        quiet(log)
        self._register()

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

    def _exposure(self):
        if self.exposure is None:
            from firmware.remote.port_forward import Exposure
            self.exposure = Exposure(self.cfg, self.log, notify=self._notify, bus=self.bus)
            self.recovery.on_shutdown('upnp', self.exposure.shutdown)
            if self.running:
                self.sup.spawn('upnp', self.exposure.run)
        return self.exposure

    def _guard(self, req):
        return self.exposure.guard(req) if self.exposure else None

    def _notify(self, text):
        if self.telegram:
            return self.telegram.send_message(text)

    def _alarm_to_management(self, ev):
        self.mgmt.alarm('alarm_test' if ev.reason == 'test' else 'esp32_cam_motion_detected')

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
            except (ValueError, TypeError):
                raise BadArgs('seconds must be an integer')
            if not 1 <= seconds <= 86400 * 7:
                raise BadArgs('seconds must be 1..604800')
            rec.deepsleep_soon(seconds, 'requested')
            return 'sleeping for %d s' % seconds

        async def status(args):
            gc.collect()
            return '%s: camera %s, alarm %s, %d viewers, up %d s, heap free %d' % (
                self.cfg.device.name, cam.state, self.alarm.state, len(self.stream.viewers),
                time.time() - self.started, gc.mem_free())

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
            return await self._exposure().open(args)

        async def close_port(args):
            return await self._exposure().close(args)

        c.register('photo', photo)
        c.register('telegram_set', telegram_set)
        c.register('open', open_port)
        c.register('close', close_port)

    # --- status of the whole device -----------------------------------------------------------
    def status(self):
        gc.collect()
        return {
            'device': self.cfg.device.name,
            'uptime_s': time.time() - self.started,
            'heap_free': gc.mem_free(), 'heap_used': gc.mem_alloc(),
            'boot': self.recovery.status(),
            'camera': self.cam.status(),
            'stream': self.stream.status(),
            'alarm': self.alarm.status(),
            'wifi': self.wifi.status(),
            'internet': self.internet.status(),
            'lfcp': self.mgmt.status() if self.mgmt else {'enabled': False},
            'telegram': self.telegram.status() if self.telegram else {'configured': False},
            'upnp': self.exposure.status() if self.exposure else {'open': False},
            'tasks': self.sup.status(),
            'supervisor': self.sup.report(),
            'admin_denied': self.admin.denied,
            'log': [l[2] for l in self.log.tail(20)],
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
        self.running = True
        if self.mgmt:
            sup.spawn('lfcp', self.mgmt.run, critical=self.mgmt.enabled)
        else:
            self.log.warn('lfcp: off: set lfcp.key (or lfcp.legacy for plain servers)')
        if self.telegram:
            self._spawn_telegram()
        if self.exposure:
            sup.spawn('upnp', self.exposure.run)
        for app, port in ((self.control.app, h.control_port), (self.stream.app, h.stream_port),
                          (self.admin.app, h.admin_port)):
            listener = Listener(app, h.bind, port, h.backlog, self.log,
                                on_connect=self.stream.make_room if app is self.stream.app else None)
            await listener.start()
            self.listeners.append(listener)
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
        print(str(e))
        print('config refused: fix config.json and restart')
        sys.exit(1)
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
    if exists('maintenance'):
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
    gc.collect()
    app = App(cfg, missing, driver)
    # Collect between the boot phases so the objects that live for good pack at the bottom of
    # the heap, leaving one large free block for the frames (a VGA JPEG needs ~31 KB in one piece).
    gc.collect()
    asyncio.run(app.run())
