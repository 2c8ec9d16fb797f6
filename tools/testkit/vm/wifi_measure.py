"""Heap cost of the reliability services on the VM: construction, and per Internet probe.

Run in a flash dir with config.json (see tests/test_wifi.py) under the sim's MICROPYPATH:
    micropython -X heapsize=256K tools/testkit/vm/wifi_measure.py
"""
import asyncio
import gc

import machine
import network

from firmware.config import schema as config
from firmware.core.events import Bus
from firmware.core.log import Log
from firmware.core.recovery import Recovery
from firmware.core.supervisor import Supervisor
from firmware.net.internet import Internet
from firmware.net.wifi import Wifi


def used():
    gc.collect()
    return gc.mem_alloc()


async def main():
    cfg = config.load('config.json')
    log = Log(50)
    bus = Bus(log)
    base = used()
    rec = Recovery(machine, log)
    sup = Supervisor(log, watchdog_s=0, machine=machine)
    wifi = Wifi(network, cfg.wifi, log, bus, recovery=rec)
    net = Internet(cfg.internet, log, bus)
    print('MEASURE construct_bytes', used() - base)
    asyncio.create_task(wifi.run())
    for _ in range(100):
        await asyncio.sleep_ms(50)
        if wifi.is_up():
            break
    await net.check()
    before = used()
    for _ in range(20):
        await net.check()
    print('MEASURE probe_retained_bytes_after_20', used() - before)
    gc.collect()
    t0 = gc.mem_alloc()
    await net.check()
    print('MEASURE probe_garbage_bytes', gc.mem_alloc() - t0)
    print('MEASURE heap_free', gc.mem_free())


asyncio.run(main())
