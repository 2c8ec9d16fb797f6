"""Fuzzing the running firmware, CI-sized: a few hundred LFCP datagrams and HTTP requests.

The generators and the checks are bench/bench_fuzz.py's (which runs tens of thousands); here the
whole firmware runs on the VM with a reference LFCP server, and afterwards nothing may have
died: same VM process, no task restarted, no traceback kept, every server answering (a real
stream viewer included), the rejects counted, no undocumented 5xx, no descriptor leaked.
"""
import socket
import time

import pytest
from testkit import fuzz as bf
from testkit.helpers import free_port
from testkit.vm.lfcp_harness import Servers, wait

pytestmark = pytest.mark.timeout(120)

N_LFCP = 300
N_HTTP = 120  # per server


@pytest.fixture
def target(firmware):
    servers = Servers()
    srv = servers.start(key=bf.KEY)
    lport = free_port(socket.SOCK_DGRAM)
    cfg = bf.config(lport, {}, ['127.0.0.1:%d' % srv.port])
    del cfg['http']
    dev = firmware(cfg)
    fz = bf.Fuzzer(dict(dev.ports), lport, admin=(cfg['admin']['user'], cfg['admin']['password']),
                   seed=0)
    yield dev, fz, servers, srv
    fz.close()
    servers.close()


def test_fuzzed_lfcp_and_http_leave_every_service_running(target):
    dev, fz, servers, srv = target
    pid = dev.board.pid
    wait(lambda: servers.device(srv, bf.NAME), 20, 'first heartbeat')
    fd0 = bf.fd_count(pid)
    assert fd0

    t = fz.lfcp(N_LFCP)
    assert t['inputs'] >= 100 and not t['bad'], t['bad']
    for kind in ('control', 'stream', 'admin'):
        t = fz.http(kind, N_HTTP)
        assert t['inputs'] >= 50, (kind, t)
        assert not t['bad'], (kind, t['bad'][:5])
    admin = fz.tally['admin']['outcomes']
    assert admin.get('4xx', 0) and any(k.endswith('+auth') for k in admin), admin

    fails, figures = fz.survived(fd0, pid, lambda: bf.fd_count(pid))
    assert not fails, (fails, dev.console()[-3000:])
    assert dev.board.pid == pid and dev.board.boots == 1, dev.board.exit_codes
    rejected = figures['rejected']
    for kind in bf.REJECTS:  # the corpus aims at each one; generated inputs add to them
        assert rejected[kind] >= 1, (kind, rejected)
    assert sum(rejected.values()) >= N_LFCP // 2, rejected
    assert figures['lfcp_stats']['errors'] == 0, figures['lfcp_stats']
    assert fz.answers.get('ERR-wrong_name') and fz.answers.get('ERR-unknown_type'), fz.answers
    n = servers.device(srv, bf.NAME).heartbeats  # the heartbeats went on through it all
    wait(lambda: servers.device(srv, bf.NAME).heartbeats > n, 10, 'a heartbeat after the fuzz')


def test_stream_request_with_a_body_still_streams_and_frees_its_slot(firmware):
    """Found by the fuzzer: microdot hands the body as req.stream, the viewer wrote to it, died
    with AttributeError and kept its slot, so max_viewers such requests locked out everyone."""
    dev = firmware({'camera': {'framesize': 'QVGA'}, 'http': {'max_viewers': 2}})
    fz = bf.Fuzzer(dict(dev.ports), free_port(socket.SOCK_DGRAM),
                   admin=('admin', 'test-admin-pw'))
    try:
        for _ in range(4):
            s = socket.create_connection(('127.0.0.1', dev.ports['stream']), timeout=10)
            s.sendall(b'GET /stream HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc')
            head = s.recv(4096)
            assert head.startswith(b'HTTP/1.0 200'), head
            got = head
            end = time.monotonic() + 10
            while b'\xff\xd8' not in got.split(b'\r\n\r\n', 1)[-1] and time.monotonic() < end:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
            s.close()
            assert b'\xff\xd8' in got, got[:300]
            wait(lambda: fz.status()['stream']['viewers'] == 0, 10, 'the slot freed')
        assert fz.viewer_frame() == 'frame'
        assert 'connection failed' not in dev.console()
    finally:
        fz.close()


def test_alarm_test_with_the_camera_off_is_refused_not_crashed(firmware):
    """Found by the fuzzer: the admin action answered 503 'internal error: OSError(...)' and
    logged 'E command alarm_test crashed' (sent as an E_ LOG line to the servers)."""
    dev = firmware({'camera': {'framesize': 'QVGA'}})
    assert dev.admin('camera_off')[0] == 200
    wait(lambda: dev.status()['camera']['state'] == 'off', 10, 'camera off')
    code, _, body = dev.admin('alarm_test')
    assert code == 503 and body.startswith(b'no test alarm: camera is off'), (code, body)
    assert 'crashed' not in dev.console()
    assert dev.admin('camera_on')[0] == 200
    wait(lambda: dev.admin('alarm_test')[0] == 200, 15, 'test alarm with the camera on')


def test_a_bad_tlgc_token_is_not_masked_in_every_later_line(target):
    """Found by the fuzzer: TLGC registered whatever came in p2 as a secret before checking it,
    so a TLGC with the device's name as 'token' turned the name into *** in every later log line,
    LOG and STAT (and each distinct bad token grew the list of secrets)."""
    dev, fz, servers, srv = target
    cid = str(fz.seqs.fresh())
    fz.udp.sendto(bf.lfcp.encode(bf.NAME, 'TLGC', (bf.NAME, '42', 0, 0, 0, cid), fz.seqs.fresh(),
                                 fz.key, bf.lfcp.DOWN), ('127.0.0.1', fz.lfcp_port))
    wait(lambda: fz.drain() or fz.answers.get('ERR-bad_token'), 10, 'ERR bad_token')
    stat = fz.direct_stat()
    assert stat and stat.startswith(bf.NAME + ':'), stat
