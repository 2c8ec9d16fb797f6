"""The composition root: the only module that knows every service and wires them together."""
import asyncio
import gc
import sys
import time

from firmware.admin import AdminServer
from firmware.alarm import Alarm
from firmware.camera_service import CameraService
from firmware.commands import BadArgs, Commands
from firmware.control import ControlServer
from firmware.events import Bus
from firmware.exposure import Exposure
from firmware.internet import Internet
from firmware.log import Log
from firmware.management import Management
from firmware.recovery import Recovery
from firmware.stream import StreamServer
from firmware.supervisor import Supervisor
from firmware.telegram import Telegram
from firmware.web import Listener, quiet
from firmware.wifi import Wifi


class App:
    def __init__(self, cfg):
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
        self.cam = CameraService(camera, cfg.camera, log, bus, beat=lambda: sup.beat('camera'),
                                 on_give_up=lambda why: self.recovery.reboot_soon(why))
        self.mgmt = Management(cfg, log, bus, self.commands, bind=cfg.http.bind,
                               beat=lambda: sup.beat('lfcp'))
        self.alarm = Alarm(self.cam, cfg.alarm, log, bus, internet=self.internet.check,
                           management_configured=self.mgmt.enabled and bool(cfg.lfcp.servers))
        self.telegram = Telegram(cfg, log, bus, self.commands, self.cam)
        self.exposure = Exposure(cfg, log, notify=self.telegram.send_message, bus=bus)
        self.stream = StreamServer(self.cam, cfg.http, log, guard=self.exposure.guard)
        self.control = ControlServer(self.cam, cfg.http, log, guard=self.exposure.guard)
        self.admin = AdminServer(cfg.admin, self.commands, self.status, log)
        self.listeners = []
        quiet(log)
        log.sinks.append(self.mgmt.log_sink)
        bus.on('alarm', self._alarm_to_management)
        self.recovery.on_shutdown('upnp', self.exposure.shutdown)
        self._register()

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

        c.register('camera_on', camera_on, 'initialise the camera')
        c.register('camera_off', camera_off, 'de-initialise the camera (power saving)')
        c.register('reboot', reboot, 'restart the board')
        c.register('sleep', sleep, 'deep sleep for N seconds')
        c.register('status', status, 'one-line status')
        c.register('arm', self.alarm.arm, 'arm the motion alarm')
        c.register('disarm', self.alarm.disarm, 'disarm the motion alarm')
        c.register('alarm_test', self.alarm.test, 'raise a test alarm')
        c.register('photo', self.telegram.cmd_photo, 'send a photo to Telegram')
        c.register('telegram_set', self.telegram.cmd_set, 'store the Telegram bot token and chat')
        c.register('open', self.exposure.open, 'open a router port to the camera; replies the URL')
        c.register('close', self.exposure.close, 'close the router port')

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
            'lfcp': self.mgmt.status(),
            'telegram': self.telegram.status(),
            'upnp': self.exposure.status(),
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
        sup.spawn('lfcp', self.mgmt.run, critical=self.mgmt.enabled)
        sup.spawn('telegram-send', self.telegram.run_sender)
        sup.spawn('telegram-poll', self.telegram.run_poller)
        sup.spawn('upnp', self.exposure.run)
        for app, port in ((self.control.app, h.control_port), (self.stream.app, h.stream_port),
                          (self.admin.app, h.admin_port)):
            listener = Listener(app, h.bind, port, h.backlog, self.log)
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
    import firmware
    from firmware import config
    try:
        cfg = config.load(path)
    except config.ConfigError as e:
        print(str(e))
        print('config refused: fix config.json and restart')
        sys.exit(1)
    del sys.modules['firmware.config']
    del firmware.config
    return cfg


def main(path='config.json'):
    cfg = load_config(path)
    gc.collect()
    app = App(cfg)
    asyncio.run(app.run())
