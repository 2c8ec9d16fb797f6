# VM driver for bench/bench_telegram.py: the lead's App (camera service, stream, control and admin
# servers on the simulated board) with its Telegram service (wired here if app.py does not),
# plus a JSON-line control port (argv[1]) to trigger alarms and read heap figures.
import asyncio
import gc
import json
import sys
import time

import micropython

from firmware.app import App
from firmware.config import schema as config
from firmware.telegram.bot import Telegram


class Event:
    def __init__(self, frame, score):
        self.time = time.time()
        self.reason = 'motion'
        self.score = score
        self.frame = frame


def main():
    cfg = config.load('config.json')
    app = App(cfg)
    tg = getattr(app, 'telegram', None)  # app.py wires it now; before that, the driver did
    own = tg is None
    if own:
        tg = Telegram(cfg, app.log, app.bus, app.commands, app.cam)
        app.commands.register('photo', tg.cmd_photo)
        app.commands.register('telegram_set', tg.cmd_set)
    peak = [0]

    async def sample():  # heap in use (live + garbage not yet collected), sampled every 2 ms
        while True:
            peak[0] = max(peak[0], gc.mem_alloc())
            await asyncio.sleep_ms(2)

    async def order(msg):
        op = msg.get('op')
        if op == 'alarm':
            import os
            frame = bytearray(os.stat(msg['file'])[6])  # one allocation, like a camera frame
            with open(msg['file'], 'rb') as f:
                f.readinto(frame)
            app.bus.emit('alarm', Event(frame, msg.get('score', 50)))
            return {'ok': True}
        if op == 'mem':
            if msg.get('reset'):
                gc.collect()
                peak[0] = gc.mem_alloc()
            return {'alloc': gc.mem_alloc(), 'free': gc.mem_free(), 'sampled_peak': peak[0],
                    'vm_peak': micropython.mem_peak()}
        if op == 'status':
            return {'telegram': tg.status(), 'stream': app.stream.status()}
        return {'ok': False}

    async def client(r, w):
        while True:
            line = await r.readline()
            if not line:
                break
            try:
                reply = await order(json.loads(line))
            except Exception as e:  # MemoryError at small heaps: answer, so the bench goes on
                reply = {'ok': False, 'error': repr(e)}
            w.write(json.dumps(reply).encode() + b'\n')
            await w.drain()
        await w.wait_closed()

    async def run():
        if own:
            app.sup.spawn('telegram-send', tg.run_sender)
            app.sup.spawn('telegram-poll', tg.run_poller)
        asyncio.create_task(sample())
        await asyncio.start_server(client, '127.0.0.1', int(sys.argv[1]))
        await app.run()

    asyncio.run(run())


main()
