"""Fuzz the running firmware: LFCP datagrams at its UDP port, HTTP requests at its three servers.

    python bench/bench_fuzz.py [--lfcp 20000] [--http 20000] [--rounds 4] [--heapsize 512K]
                               [--seed 1]

The whole firmware runs on the MicroPython VM (tools/sim/simulate.py Board) with a reference LFCP
server on loopback. hypothesis generates the inputs: binary and CSV-ish datagrams, near-valid
ones (truncated, oversized, wrong field counts, bad MACs, wrong names, replayed seqs) and
authenticated direct commands; HTTP requests with generated methods, paths, query strings,
headers and bodies, raw malformed request lines, admin with and without credentials. Then it
checks that nothing died: the same VM process, no task restarted, no traceback kept, every
server still answering, the rejects counted, no 5xx outside the documented ones, a stable number
of open descriptors. Prints a table; exits 1 when a check fails.

Two commands are never fuzzed with valid credentials, because they end the run by design:
RST/DSLP over LFCP and /action/reboot and /action/sleep on the admin server (their argument
checking is still fuzzed: without credentials, and over LFCP with a bad MAC).
tests/test_fuzz.py runs the same fuzzers with a few hundred inputs.
"""
import argparse
import json
import os
import socket
import sys
import tempfile
import time

from testkit.fuzz import ADMIN, KEY, NAME, Fuzzer, Seqs, config, fd_count  # noqa: F401
from testkit.helpers import free_port
from testkit.paths import ROOT

# --- the bench ----------------------------------------------------------------------------------

def table(fz, timings, fails, figures):
    print('| target | inputs | inputs/s | outcomes | findings |')
    print('|---|---:|---:|---|---:|')
    for target, t in fz.tally.items():
        outs = ', '.join('%s %d' % kv for kv in sorted(t['outcomes'].items()))
        print('| %s | %d | %.0f | %s | %d |' % (target, t['inputs'],
                                               t['inputs'] / max(timings[target], 1e-9), outs,
                                               len(t['bad'])))
    rej = figures.get('rejected', {})
    print('\nLFCP rejects counted by the device: %s (total %d)' % (
        ', '.join('%s %d' % kv for kv in sorted(rej.items())), sum(rej.values())))
    print('LFCP device stats: %s' % figures.get('lfcp_stats'))
    print('device answers to the fuzz socket: %s' % ', '.join(
        '%s %d' % kv for kv in sorted(fz.answers.items())))
    print('after the run: %s' % ', '.join('%s=%s' % (k, v) for k, v in figures.items()
                                          if k not in ('rejected', 'lfcp_stats')))
    print('crashes (task restarts, tracebacks, dead servers, undocumented 5xx, timeouts): %d' % (
        len(fails) + sum(len(t['bad']) for t in fz.tally.values())))
    for f in fails:
        print('  FAIL', f)
    for target, t in fz.tally.items():
        for b in t['bad'][:5]:
            print('  %s: %r' % (target, b))


def main(argv=None):
    ap = argparse.ArgumentParser(description='fuzz the running firmware (LFCP and HTTP)')
    ap.add_argument('--lfcp', type=int, default=20000, help='LFCP datagrams')
    ap.add_argument('--http', type=int, default=20000, help='HTTP requests, split over 3 ports')
    ap.add_argument('--heapsize', default='512K', help='VM heap (0 = the VM default)')
    ap.add_argument('--rounds', type=int, default=4, help='rounds (heap measured after each)')
    ap.add_argument('--seed', type=int, default=None, help='derandomized run')
    ap.add_argument('--keep', action='store_true', help='keep the flash dir')
    a = ap.parse_args(argv)
    from sim.simulate import Board
    from testkit.vm.lfcp_harness import Servers

    flash = tempfile.mkdtemp(prefix='fuzz-flash-')
    ports = {'control_port': free_port(socket.SOCK_STREAM),
             'stream_port': free_port(socket.SOCK_STREAM),
             'admin_port': free_port(socket.SOCK_STREAM)}
    lport = free_port(socket.SOCK_DGRAM)
    servers = Servers()
    srv = servers.start(key=KEY)
    os.makedirs(os.path.join(flash, '.sim'))
    with open(os.path.join(flash, 'config.json'), 'w') as f:
        json.dump(config(lport, ports, ['127.0.0.1:%d' % srv.port]), f)
    board = Board(flash, heapsize=None if a.heapsize == '0' else a.heapsize)
    board.start()
    fz = None
    code = 1
    try:
        if not board.wait_ready(list(ports.values()), 60):
            print('firmware did not come up:\n' + board.console()[-3000:])
            sys.exit(1)
        fz = Fuzzer({'control': ports['control_port'], 'stream': ports['stream_port'],
                     'admin': ports['admin_port']}, lport, seed=a.seed)
        pid = board.pid
        time.sleep(1)
        fd0 = fd_count(pid)
        heap0 = fz.status()['heap_free']
        timings = dict((k, 0.0) for k in ('lfcp', 'control', 'stream', 'admin'))
        heaps = []
        for _ in range(a.rounds):  # heap after each round: a leak shows as a trend
            t0 = time.monotonic()
            fz.lfcp(a.lfcp // a.rounds)
            timings['lfcp'] += time.monotonic() - t0
            for kind in ('control', 'stream', 'admin'):
                t0 = time.monotonic()
                fz.http(kind, a.http // 3 // a.rounds)
                timings[kind] += time.monotonic() - t0
            heaps.append(fz.status()['heap_free'])
        fails, figures = fz.survived(fd0, pid, lambda: fd_count(pid))
        if board.pid != pid or board.boots != 1:
            fails.append('the VM restarted: boots %d, exit codes %r' % (board.boots,
                                                                         board.exit_codes))
        figures['heap_free before'] = heap0
        figures['heap_free after each round'] = heaps
        hb = servers.device(srv, NAME)
        figures['heartbeats at the server'] = hb.heartbeats if hb else 0
        if not hb or not hb.reachable(10):
            fails.append('the management server stopped hearing heartbeats')
        figures['VM pid alive'] = fd_count(pid) is not None
        table(fz, timings, fails, figures)
        code = 1 if fails or any(t['bad'] for t in fz.tally.values()) else 0
        tb = board.console().count('Traceback')
        print('console: %d lines, %d tracebacks printed (microdot reports unparsable requests '
              'this way), %d error lines' % (board.console().count('\n'), tb,
                                             board.console().count('\nE ')))
    finally:
        if fz:
            fz.close()
        board.stop()
        servers.close()
        if a.keep:
            print('flash kept in', flash)
    if code:
        sys.exit(code)
    return 0


if __name__ == '__main__':
    main()
