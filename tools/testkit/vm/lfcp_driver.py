"""Runs the LFCP service alone on the MicroPython VM, with fake command handlers.

cwd is the flash directory holding config.json. Every command run prints `RUN <name> <args>`,
every 'management' event prints `EVENT management <up>`, so the test counts executions on stdout.
A control socket on 127.0.0.1:$LFCP_CTL answers `status` (JSON), `alarm <text>`, `log <text>`.
$LFCP_FAIL lists command names that fail; `reboot` and `sleep` end the process (exit 3 / 4).
"""
import asyncio
import json
import os
import socket
import sys

from firmware.config import schema as config
from firmware.core.commands import CommandError, Commands
from firmware.core.events import Bus
from firmware.core.log import Log
from firmware.lfcp.client import LfcpClient

FAIL = (os.getenv('LFCP_FAIL') or '').split(',')


def main():
    cfg = config.load('config.json')
    log = Log()
    bus = Bus(log)
    cmds = Commands(log)
    mgmt = LfcpClient(cfg, log, bus, cmds, bind='127.0.0.1')
    log.sinks.append(mgmt.log_sink)
    bus.on('management', lambda up: print('EVENT management', up))
    state = {'armed': False}

    def handler(name):
        async def run(args):
            print('RUN', name, json.dumps(args))
            if name in FAIL:
                raise CommandError(name + ' failed on purpose')
            if name in ('arm', 'disarm'):
                state['armed'] = name == 'arm'
                bus.emit('armed', 'armed' if name == 'arm' else 'disarmed', 'command')
            if name == 'status':
                return 'armed=%d, camera=off' % state['armed']
            if name in ('reboot', 'sleep'):
                await asyncio.sleep_ms(100)
                print('DOWN', name)
                sys.exit(3 if name == 'reboot' else 4)
            return 'ok'
        return run

    for n in ('arm', 'disarm', 'photo', 'telegram_set', 'reboot', 'sleep', 'camera_on',
              'camera_off', 'status', 'open', 'close'):
        cmds.register(n, handler(n))

    async def control(port):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(socket.getaddrinfo('127.0.0.1', port)[0][-1])
        s.setblocking(False)
        while True:
            try:
                data, addr = s.recvfrom(512)
            except OSError:
                await asyncio.sleep_ms(20)
                continue
            text = data.decode()
            if text == 'status':
                out = json.dumps(mgmt.status())
            elif text.startswith('alarm '):
                out = str(mgmt.alarm(text[6:]))
            elif text.startswith('log '):
                log.warn(text[4:])
                out = 'ok'
            else:
                out = 'unknown'
            s.sendto(out.encode(), addr)

    async def go():
        asyncio.create_task(control(int(os.getenv('LFCP_CTL'))))
        print('READY')
        await mgmt.run()
        print('SERVICE RETURNED')
        await asyncio.sleep(3600)

    asyncio.run(go())


main()
