# VM driver for the Telegram tests and benchmark: builds Log/Bus/Commands, a stub camera and the
# Telegram service from ./config.json (cwd = a temp flash dir), runs it on real sockets, and takes
# JSON-line orders on a loopback control port (argv[1]). A 25 fps "stream" task measures how
# long the loop is held between frames, as the MJPEG stream would feel it.
import asyncio
import gc
import json
import sys
import time

import micropython

from firmware.config import schema as config
from firmware.core.commands import Commands
from firmware.core.events import Bus
from firmware.core.log import Log
from firmware.telegram.bot import Telegram


class Camera:
    """snapshot() like the camera service: photo.jpg from the flash dir, OSError when off."""

    def __init__(self):
        self.on = True
        self.taken = 0

    async def snapshot(self):
        await asyncio.sleep_ms(5)
        if not self.on:
            raise OSError('camera is off')
        self.taken += 1
        with open('photo.jpg', 'rb') as f:
            return f.read()


class Event:
    def __init__(self, reason, score, frame):
        self.time = time.time()
        self.reason = reason
        self.score = score
        self.frame = frame


class Ticker:
    """A stand-in for the stream: wants a frame every 40 ms, records the frames it got."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.frames = 0
        self.max_gap = 0
        self.t0 = time.ticks_ms()

    async def run(self):
        last = time.ticks_ms()
        while True:
            await asyncio.sleep_ms(40)
            now = time.ticks_ms()
            self.max_gap = max(self.max_gap, time.ticks_diff(now, last))
            last = now
            self.frames += 1

    def report(self):
        dt = time.ticks_diff(time.ticks_ms(), self.t0)
        return {'frames': self.frames, 'ms': dt, 'fps': self.frames * 1000 / max(dt, 1),
                'max_gap_ms': self.max_gap}


def build():
    cfg = config.load('config.json')
    log = Log(200)
    bus = Bus(log)
    cmds = Commands(log)
    cam = Camera()
    tg = Telegram(cfg, log, bus, cmds, cam)
    state = {'armed': False, 'reboots': 0, 'tasks': []}

    async def arm(args):
        state['armed'] = True
        return 'armed'

    async def disarm(args):
        state['armed'] = False
        return 'disarmed'

    async def status(args):
        return 'armed' if state['armed'] else 'disarmed'

    async def reboot(args):
        state['reboots'] += 1

        async def reset():  # like the board: the bot is gone 0.3 s later
            await asyncio.sleep_ms(300)
            for t in state['tasks']:
                t.cancel()
        asyncio.create_task(reset())
        return 'rebooting'

    cmds.register('arm', arm)
    cmds.register('disarm', disarm)
    cmds.register('status', status)
    cmds.register('reboot', reboot)
    cmds.register('photo', tg.cmd_photo)
    cmds.register('telegram_set', tg.cmd_set)
    return log, bus, cmds, cam, tg, state


async def main():
    log, bus, cmds, cam, tg, state = build()
    ticker = Ticker()
    state['tasks'] = [asyncio.create_task(tg.run_sender()), asyncio.create_task(tg.run_poller())]
    asyncio.create_task(ticker.run())

    async def order(msg):
        op = msg.get('op')
        if op == 'alarm':
            with open(msg.get('file', 'photo.jpg'), 'rb') as f:
                frame = f.read()
            bus.emit('alarm', Event(msg.get('reason', 'motion'), msg.get('score', 42), frame))
            frame = None
            return {'ok': True}
        if op == 'command':
            try:
                return {'ok': True, 'text': await cmds.run(msg['name'], msg.get('args', {}), 'test')}
            except Exception as e:
                return {'ok': False, 'error': log.redact(str(e.args[0] if e.args else e))}
        if op == 'timeouts':
            tg.timeouts.update(msg['timeouts'])
            return {'ok': True}
        if op == 'camera':
            cam.on = msg['on']
            return {'ok': True}
        if op == 'status':
            st = {'armed': state['armed'], 'reboots': state['reboots']}
            return {'ok': True, 'status': tg.status(), 'state': st, 'taken': cam.taken,
                    'log': [l[2] for l in log.lines]}
        if op == 'tick':
            r = ticker.report()
            if msg.get('reset'):
                ticker.reset()
            return r
        if op == 'mem':
            if msg.get('collect'):
                gc.collect()
            return {'peak': micropython.mem_peak(), 'free': gc.mem_free(), 'alloc': gc.mem_alloc()}
        return {'ok': False, 'error': 'unknown op'}

    async def client(r, w):
        try:
            while True:
                line = await r.readline()
                if not line:
                    break
                try:
                    reply = await order(json.loads(line))
                except Exception as e:
                    reply = {'ok': False, 'error': repr(e)}
                w.write(json.dumps(reply).encode() + b'\n')
                await w.drain()
        finally:
            await w.wait_closed()

    await asyncio.start_server(client, '127.0.0.1', int(sys.argv[1]))
    print('driver ready')
    while True:
        await asyncio.sleep(3600)


asyncio.run(main())
