"""Supervisor and recovery on the MicroPython VM with the simulated machine module.

  boot                  report the reset cause (and the note of the previous run); every
                        other scenario becomes this one on a boot that is not a power-on
  crash                 a task raising twice is restarted; prints the supervisor status as JSON
  hang WDT_S            a critical task stops beating: the watchdog resets the board
  spin WDT_S            a critical task never yields: the feeder starves, the watchdog resets
  healthy WDT_S SECS    critical tasks that beat keep the board up for SECS seconds
  reboot                shutdown hooks (one fails, one hangs) run, then machine.reset()
  deepsleep SECS        shutdown hooks run, then machine.deepsleep()

Run by tools/sim/simulate.py's Board (argv=[this file, ...]): it restarts the VM after a reset,
watchdog or deep sleep with the matching machine.reset_cause().
"""
import asyncio
import json
import sys

import machine

from firmware.core.log import Log
from firmware.core.recovery import Recovery
from firmware.core.supervisor import Supervisor


def make(wdt_s=0):
    log = Log(50)
    log.secret('s3cr3t-token')
    rec = Recovery(machine, log)
    rec.report()
    sup = Supervisor(log, watchdog_s=wdt_s, machine=machine, on_stall=rec.note_stall)
    return log, rec, sup


async def crash():
    log, rec, sup = make()
    runs = [0]

    async def flaky():
        runs[0] += 1
        if runs[0] <= 2:
            raise ValueError('boom %d with s3cr3t-token' % runs[0])
        while True:
            await asyncio.sleep_ms(50)

    async def done():
        return

    sup.spawn('flaky', flaky)
    sup.spawn('oneshot', done)
    for _ in range(100):
        await asyncio.sleep_ms(100)
        if runs[0] >= 3:
            break
    print('RESULT', json.dumps({'runs': runs[0], 'status': sup.status(),
                                'report': sup.report(), 'rec': rec.status()}))


async def hang(wdt_s):
    log, rec, sup = make(wdt_s)
    n = [0]

    async def cam():
        while True:
            sup.beat('cam')
            n[0] += 1
            if n[0] == 10:
                print('HANGING')
                await asyncio.Event().wait()   # stuck forever, the loop itself still runs
            await asyncio.sleep_ms(100)

    async def other():
        while True:
            await asyncio.sleep_ms(100)

    sup.spawn('cam', cam, critical=True, allowance_s=1)
    sup.spawn('other', other)
    await asyncio.sleep(60)
    print('STILL ALIVE')


async def spin(wdt_s):
    log, rec, sup = make(wdt_s)

    async def cam():
        await asyncio.sleep_ms(500)
        print('SPINNING')
        while True:   # a loop that never yields: no task runs any more, not even the feeder
            pass

    sup.spawn('cam', cam, critical=True)
    await asyncio.sleep(60)
    print('STILL ALIVE')


async def healthy(wdt_s, secs):
    log, rec, sup = make(wdt_s)

    async def beater(name, ms):
        while True:
            sup.beat(name)
            await asyncio.sleep_ms(ms)

    sup.spawn('a', lambda: beater('a', 200), critical=True)
    sup.spawn('b', lambda: beater('b', 700), critical=True)
    await asyncio.sleep(secs)
    print('RESULT', json.dumps({'status': sup.status(), 'report': sup.report()}))


def hooks(rec):
    async def ok():
        print('HOOK ok ran')

    async def bad():
        raise OSError(5)

    async def stuck():
        await asyncio.sleep(3600)

    rec.on_shutdown('ok', ok)
    rec.on_shutdown('bad', bad)
    rec.on_shutdown('stuck', stuck)


async def reboot():
    log, rec, sup = make()
    hooks(rec)
    rec.reboot_soon('test reboot')
    await asyncio.sleep(30)
    print('STILL ALIVE')


async def deepsleep(secs):
    log, rec, sup = make()
    hooks(rec)
    rec.deepsleep_soon(secs, 'test sleep')
    await asyncio.sleep(30)
    print('STILL ALIVE')


async def boot():
    log, rec, sup = make()
    print('RESULT', json.dumps(rec.status()))


def main(argv):
    cmd = argv[1]
    nums = [int(a) for a in argv[2:]]
    if machine.reset_cause() != machine.PWRON_RESET:
        cmd, nums = 'boot', []   # the boot after the fault: report it and end
    asyncio.run({'boot': boot, 'crash': crash, 'hang': hang, 'spin': spin, 'healthy': healthy,
                 'reboot': reboot, 'deepsleep': deepsleep}[cmd](*nums))


main(sys.argv)
