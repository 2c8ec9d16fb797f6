"""Wi-Fi and Internet probe services on the MicroPython VM with the simulated radio.

Run by tools/sim/simulate.py's Board (argv=[this file]); cwd is the flash with config.json. The test
changes the air (<flash>/.sim/air.json) while this runs. Prints one line per bus event
("EVENT uplink True 1234", the number is ticks_ms) and keeps the services' status in
wifi_status.json (rewritten every 200 ms) for the test to poll.
"""
import asyncio
import time

import machine
import network

from firmware.config import schema as config
from firmware.core import store
from firmware.core.events import Bus
from firmware.core.log import Log
from firmware.core.recovery import Recovery
from firmware.net.internet import Internet
from firmware.net.wifi import Wifi


async def main():
    cfg = config.load('config.json')
    log = Log(50)
    bus = Bus(log)
    rec = Recovery(machine, log)
    rec.report()
    wifi = Wifi(network, cfg.wifi, log, bus, recovery=rec)
    net = Internet(cfg.internet, log, bus)
    for name in ('uplink', 'internet'):
        bus.on(name, lambda up, name=name: print('EVENT', name, up, time.ticks_ms()))
    asyncio.create_task(wifi.run())
    asyncio.create_task(net.run())
    while True:
        store.save('wifi_status.json', {'wifi': wifi.status(), 'internet': net.status(),
                                        'boot': rec.status()})
        await asyncio.sleep_ms(200)


asyncio.run(main())
