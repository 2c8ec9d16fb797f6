"""The composition root: the only module that knows every service and wires them together."""
import asyncio
import gc
import sys
import time

from firmware import config as config_mod
from firmware.admin import AdminServer
from firmware.alarm import Alarm
from firmware.camera_service import CameraService
from firmware.commands import BadArgs, CommandError, Commands
from firmware.control import ControlServer
from firmware.events import Bus
from firmware.log import Log
from firmware.stream import StreamServer
from firmware.supervisor import Supervisor
from firmware.web import Listener


class App:
    def __init__(self, cfg):
        import camera
        import machine
        self.cfg = cfg
        self.machine = machine
        self.started = time.time()
        self.log = log = Log(cfg.log.lines)
        self.bus = Bus(log)
        self.commands = Commands(log)
        self.sup = Supervisor(log)
        self.cam = CameraService(camera, cfg.camera, log, self.bus, on_give_up=self.reboot_later)
        self.stream = StreamServer(self.cam, cfg.http, log)
        self.control = ControlServer(self.cam, cfg.http, log)
        self.admin = AdminServer(cfg.admin, self.commands, self.status, log)
        self.alarm = Alarm(self.cam, cfg.alarm, log, self.bus, internet=None,
                           management_configured=bool(cfg.lfcp.servers))
        self.listeners = []
        self._register()

    # --- commands shared by HTTP, LFCP and Telegram ------------------------------------------
    def _register(self):
        c = self.commands
        cam = self.cam

        async def camera_on(args):
            cam.turn_on()
            return 'camera on'

        async def camera_off(args):
            cam.turn_off()
            return 'camera off'

        async def reboot(args):
            self.reboot_later('requested')
            return 'rebooting'

        async def sleep(args):
            try:
                seconds = int(args.get('seconds', 0))
            except (ValueError, TypeError):
                raise BadArgs('seconds must be an integer')
            if not 1 <= seconds <= 86400 * 7:
                raise BadArgs('seconds must be 1..604800')
            self.later(self._deepsleep, seconds)
            return 'sleeping for %d s' % seconds

        async def status(args):
            s = self.status()
            return 'camera %s, %d viewers, up %d s, heap free %d' % (
                s['camera']['state'], s['stream']['viewers'], s['uptime_s'], s['heap_free'])

        async def photo(args):
            raise CommandError('Telegram is not configured')

        c.register('camera_on', camera_on, 'initialise the camera')
        c.register('camera_off', camera_off, 'de-initialise the camera (power saving)')
        c.register('reboot', reboot, 'restart the board')
        c.register('sleep', sleep, 'deep sleep for N seconds')
        c.register('status', status, 'one-line status')
        c.register('photo', photo, 'send a photo to Telegram')
        c.register('arm', self.alarm.arm, 'arm the motion alarm')
        c.register('disarm', self.alarm.disarm, 'disarm the motion alarm')
        c.register('alarm_test', self.alarm.test, 'raise a test alarm')

    def later(self, fn, *args):
        """Run fn after a short delay, so the reply to the command gets out first."""
        async def go():
            await asyncio.sleep_ms(300)
            fn(*args)
        asyncio.create_task(go())

    def reboot_later(self, why):
        self.log.warn('reboot:', why)
        self.later(self.machine.reset)

    def _deepsleep(self, seconds):
        self.machine.deepsleep(seconds * 1000)

    # --- status of the whole device -----------------------------------------------------------
    def status(self):
        gc.collect()
        return {
            'device': self.cfg.device.name,
            'uptime_s': time.time() - self.started,
            'heap_free': gc.mem_free(), 'heap_used': gc.mem_alloc(),
            'camera': self.cam.status(),
            'stream': self.stream.status(),
            'alarm': self.alarm.status(),
            'tasks': self.sup.status(),
            'admin_denied': self.admin.denied,
            'log': [l[2] for l in self.log.tail(20)],
        }

    # --- run ------------------------------------------------------------------------------
    async def run(self):
        h = self.cfg.http
        self.sup.spawn('camera', self.cam.run, critical=True)
        self.sup.spawn('stream-reaper', self.stream.reap)
        self.sup.spawn('motion', self.alarm.run, critical=True)
        self.sup.spawn('auto-arm', self.alarm.auto_arm)
        for app, port in ((self.control.app, h.control_port), (self.stream.app, h.stream_port),
                          (self.admin.app, h.admin_port)):
            listener = Listener(app, h.bind, port, h.backlog, self.log)
            await listener.start()
            self.listeners.append(listener)
        self.log('listening: control :%d, stream :%d, admin :%d' % (
            h.control_port, h.stream_port, h.admin_port))
        if not self.cfg.admin.password:
            self.log.warn('admin server disabled: set admin.password in config.json')
        while True:
            await asyncio.sleep(3600)


def main(path='config.json'):
    try:
        cfg = config_mod.load(path)
    except config_mod.ConfigError as e:
        print(str(e))
        print('config refused: fix config.json and restart')
        sys.exit(1)
    config_mod.SCHEMA = None    # ~15 KB of heap: validation is done, the values live in cfg
    gc.collect()
    app = App(cfg)
    asyncio.run(app.run())
