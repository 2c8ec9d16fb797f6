"""Heap cost of the LFCP service on the MicroPython VM; prints one JSON line (bench/bench_lfcp.py).

argv: key port_a port_b. cwd is a scratch flash dir. Figures are gc.mem_alloc() differences
after gc.collect(); allocation per exchange is measured with the collector off.
"""
import asyncio
import gc
import json
import sys

import micropython

gc.collect()
m_start = gc.mem_alloc()
from firmware.config import schema as config
from firmware.core import (
    commands,
    events,
    log,
    store,  # noqa: E402,F401  the shared core
)

gc.collect()
m_core = gc.mem_alloc()
from firmware.lfcp import client as management  # noqa: E402
from firmware.lfcp import codec as lfcp

gc.collect()
m_mods = gc.mem_alloc()

key, pa, pb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cfg = config.Config({'device': {'name': 'cam1'}, 'lfcp': {
    'servers': ['127.0.0.1:%d' % pa, '127.0.0.1:%d' % pb], 'key': key, 'port': 0,
    'heartbeat_s': 1, 'unreachable_after_s': 3}})
lg = log.Log()
lg.sinks.append(lambda level, line: None)
bus = events.Bus(lg)
cmds = commands.Commands(lg)
gc.collect()
m_pre = gc.mem_alloc()
m = management.LfcpClient(cfg, lg, bus, cmds, bind='127.0.0.1')
lg.sinks.append(m.log_sink)
gc.collect()
m_inst = gc.mem_alloc()


async def main():
    task = asyncio.create_task(m.run())
    for _ in range(100):
        await asyncio.sleep_ms(100)
        if m.up:
            break
    await asyncio.sleep(2)
    gc.collect()
    m_running = gc.mem_alloc()

    await asyncio.sleep(5)
    gc.collect()
    m_later = gc.mem_alloc()

    n = 50
    s = m.servers[0]
    replies = [lfcp.encode('cam1', 'ACK', ('HEARTBEAT',), m.state.seq + 1 + i, m.key, lfcp.DOWN) for i in range(n)]
    junk = [lfcp.encode('cam1', 'ENAL', (), 10 ** 12 + i, lfcp.Hmac('wrong'), lfcp.DOWN) for i in range(n)]
    other = b'\x02\x00\x01\x02\x7f\x00\x00\x01' + bytes(8)  # a sockaddr nobody else uses
    heard = s.replies
    limit = cfg.lfcp.rate_limit
    m.limiter.__init__(10000, len(m.servers))  # the rate limiter must not get in the way here
    gc.collect()
    gc.disable()
    a0 = gc.mem_alloc()
    for i in range(n):
        m._send(s, 'HEARTBEAT', (0,))
        m._handle(replies[i], s.addr)
    a1 = gc.mem_alloc()
    for i in range(n):
        m._handle(junk[i], s.addr)  # bad MAC
    a2 = gc.mem_alloc()
    m.limiter.__init__(limit, len(m.servers))
    for i in range(limit):
        m._handle(junk[0], other)  # use up the bucket of `other`
    a3 = gc.mem_alloc()
    for i in range(n):
        m._handle(junk[0], other)  # rate-limited: dropped before parsing
    a4 = gc.mem_alloc()
    gc.enable()
    ok = s.replies - heard
    bad = m.rejected['bad_mac']
    task.cancel()
    print(json.dumps({
        'core_modules': m_core - m_start, 'lfcp_modules': m_mods - m_core,
        'instance': m_inst - m_pre, 'running': m_running - m_pre,
        'after_5s_more': m_later - m_pre, 'peak': micropython.mem_peak(),
        'per_exchange': (a1 - a0) / n, 'exchanges_accepted': ok, 'n': n,
        'per_bad_mac': (a2 - a1) / n, 'per_rate_limited': (a4 - a3) / n,
        'bad_mac': bad, 'rate_limited': m.rejected['rate']}))


asyncio.run(main())
