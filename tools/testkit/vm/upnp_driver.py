# Runs the port forward (remote/port_forward.py) on the MicroPython VM for tests/test_upnp*.py, driven over stdin.
#
# cwd is a temp flash dir with config.json. Env: UPNP_LAN="ip/mask" (the station address; the
# netns test gives the real one); UPNP_WEB=port starts a small microdot app behind exp.guard. One JSON command per stdin line: {"cmd": "open"|"close"|
# "status"|"shutdown"|"uplink"|"allows"|"find"|"entry"|"measure"|"exit", ...}; one "R <json>" line answers each.
# Notifications print as "N <json text>", or, when config.json has a Telegram token, go to the
# chats through firmware/telegram/bot.py, which then also takes /open and /close from them.
import asyncio
import json
import os
import sys
import time

from firmware.config import schema as config
from firmware.core.commands import CommandError, Commands
from firmware.core.events import Bus
from firmware.core.log import Log
from firmware.remote import upnp
from firmware.remote.port_forward import PortForward


def out(kind, obj):
    print(kind, json.dumps(obj))


async def notify(text):
    out('N', text)


async def main():
    cfg = config.load('config.json')
    log = Log(50)
    bus = Bus(log)
    lan = (os.getenv('UPNP_LAN') or '127.0.0.1/255.0.0.0').split('/')
    cmds = Commands(log)
    tell = notify
    if cfg.telegram.token:  # wired like the firmware: Telegram commands, notices to the chats
        from firmware.telegram.bot import Telegram
        tg = Telegram(cfg, log, bus, cmds, None)
        tell = tg.send_message
        asyncio.create_task(tg.run_sender())
        asyncio.create_task(tg.run_poller())
    exp = PortForward(cfg, log, lan=lambda: (lan[0], lan[1]), notify=tell, bus=bus)
    cmds.register('open', exp.open)
    cmds.register('close', exp.close)
    asyncio.create_task(exp.run())
    web = os.getenv('UPNP_WEB')
    if web:  # a stand-in for the exposed server, guarded the way the firmware's servers are
        from microdot import Microdot

        from firmware.web import common as webcommon
        app = Microdot()
        webcommon.common(app, log, guard=exp.guard)

        @app.route('/stream')
        async def stream(req):
            return 'frames'

        @app.route('/status')
        async def status(req):
            return {'ok': 1}
        asyncio.create_task(app.start_server('127.0.0.1', int(web)))
    out('R', {'ready': True})
    rd = asyncio.StreamReader(sys.stdin)
    while True:
        line = await rd.readline()
        if not line:
            break
        try:
            c = json.loads(line)
        except ValueError:
            out('R', {'ok': False, 'error': 'bad json'})
            continue
        cmd = c.get('cmd')
        try:
            if cmd in ('open', 'close'):
                res = {'ok': True, 'text': await cmds.run(cmd, c.get('args'), 'test')}
            elif cmd == 'status':
                res = {'ok': True, 'status': exp.status()}
            elif cmd == 'shutdown':
                await exp.shutdown()
                res = {'ok': True, 'status': exp.status()}
            elif cmd == 'uplink':
                bus.emit('uplink', True)
                res = {'ok': True}
            elif cmd == 'allows':
                res = {'ok': True, 'allows': exp.gate.allows(c['peer'], c['target'], c.get('cookie')),
                       'required': exp.gate.required}
            elif cmd == 'find':
                host, port = cfg.upnp.ssdp.split(':')
                igd = await upnp.find((host, int(port)))
                res = {'ok': True, 'control': igd.control, 'service': igd.service,
                       'external': await igd.external_ip()}
            elif cmd == 'entry':
                host, port = cfg.upnp.ssdp.split(':')
                igd = await upnp.find((host, int(port)))
                res = {'ok': True, 'entry': await igd.entry(c['port'])}
            elif cmd == 'measure':  # bytes the GC heap hands out during one command
                import gc
                gc.collect()
                free = gc.mem_free()
                gc.disable()
                a0 = gc.mem_alloc()
                t0 = time.ticks_ms()
                text = await cmds.run(c['what'], None, 'test')
                ms = time.ticks_diff(time.ticks_ms(), t0)
                a1 = gc.mem_alloc()
                gc.enable()
                res = {'ok': True, 'alloc': a1 - a0, 'ms': ms, 'free': free, 'text': text}
            elif cmd == 'exit':
                out('R', {'ok': True})
                break
            else:
                res = {'ok': False, 'error': 'unknown cmd'}
        except CommandError as e:
            res = {'ok': False, 'error': e.args[0]}
        except upnp.UPnPError as e:
            res = {'ok': False, 'error': str(e), 'code': e.code}
        out('R', res)
    sys.stdout.flush() if hasattr(sys.stdout, 'flush') else None


asyncio.run(main())
