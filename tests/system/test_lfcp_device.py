"""The LFCP service on the MicroPython VM against reference servers on loopback."""
import os
import socket
import time

import pytest
from testkit.vm.lfcp_harness import KEY, Device, Nat, fields, kind, lfcp_server, wait

pytestmark = [pytest.mark.timeout(90),
              pytest.mark.skipif(not os.path.exists(Device.__init__.__globals__['MP']),
                                 reason='no MicroPython VM: run make setup')]


@pytest.fixture
def device(tmp_path):
    made = []

    def make(lfcp, flash=None, **kw):
        d = Device(flash or tmp_path, dict({'key': KEY, 'heartbeat_s': 1,
                                            'unreachable_after_s': 3}, **lfcp), **kw)
        made.append(d)
        return d.start()
    yield make
    for d in made:
        d.stop()


def addr(srv):
    return '127.0.0.1:%d' % srv.port


def beats(servers, srv, name='cam1'):
    d = servers.device(srv, name)
    return d.heartbeats if d else 0


def cmd_state(servers, srv, cid):
    for c in servers.commands(srv, 'cam1'):
        if c['id'] == cid:
            return c
    return None


def test_heartbeats_reach_both_servers_at_the_configured_cadence(servers, device):
    a, b = servers.start(), servers.start()
    d = device({'servers': [addr(a), addr(b)], 'heartbeat_s': 1})
    wait(lambda: beats(servers, a) >= 1 and beats(servers, b) >= 1, 10, 'first heartbeats')
    a0, b0, t0 = beats(servers, a), beats(servers, b), time.monotonic()
    time.sleep(4)
    dt = time.monotonic() - t0
    for n in (beats(servers, a) - a0, beats(servers, b) - b0):
        assert dt - 2 <= n <= dt + 2, (n, dt)  # about one a second, to each server
    dev = servers.device(a, 'cam1')
    assert dev.auth is True and dev.armed is False
    st = d.status()
    assert [s['state'] for s in st['servers']] == ['reachable', 'reachable']
    assert st['up'] is True and 'EVENT management True' in d.lines
    assert KEY not in d.output() and KEY not in str(st)


def test_queued_command_runs_once_and_is_acked(servers, device):
    a = servers.start()
    d = device({'servers': [addr(a)]})
    c = servers.call(a.queue, 'cam1', 'ENAL')
    wait(lambda: (cmd_state(servers, a, c.id) or {}).get('state') == 'acked', 10, 'ENAL acked')
    n = beats(servers, a)
    wait(lambda: beats(servers, a) >= n + 2, 10, 'more heartbeats')  # nothing runs again ...
    assert len(d.runs('arm')) == 1
    assert servers.device(a, 'cam1').armed is True  # ... and they report the armed state
    servers.call(a.queue, 'cam1', 'DSAL')
    wait(lambda: d.runs('disarm'), 10, 'DSAL')
    n = beats(servers, a)
    wait(lambda: beats(servers, a) >= n + 2, 10, 'more heartbeats')
    assert servers.device(a, 'cam1').armed is False
    wait(lambda: any(x['text'] == 'alarm_enabled_request_via_lfcp'
                     for x in servers.call(lambda: list(a.devices['cam1'].logs))), 5, 'LOG')


def test_retransmitted_command_is_not_run_twice(servers, device):
    a = servers.start()
    nat = Nat(('127.0.0.1', a.port))
    try:
        nat.drop_up = lambda data: kind(data) == 'ACK'  # the server never hears the ACK ...
        d = device({'servers': ['127.0.0.1:%d' % nat.port]})
        c = servers.call(a.queue, 'cam1', 'WCAM')
        wait(lambda: (cmd_state(servers, a, c.id) or {}).get('tries', 0) >= 3, 15, 'resends')
        nat.drop_up = None  # ... until now
        wait(lambda: cmd_state(servers, a, c.id)['state'] == 'acked', 10, 'ACK')
        assert len(d.runs('camera_on')) == 1
        assert d.status()['stats']['duplicates'] >= 2
    finally:
        nat.close()


def test_failed_command_is_acked_then_erred(servers, device):
    a = servers.start()
    nat = Nat(('127.0.0.1', a.port))
    try:
        device({'servers': ['127.0.0.1:%d' % nat.port]}, env={'LFCP_FAIL': 'photo'})
        c = servers.call(a.queue, 'cam1', 'TLGS')
        wait(lambda: (cmd_state(servers, a, c.id) or {}).get('state') == 'failed', 10, 'ERR')
        assert cmd_state(servers, a, c.id)['error'] == 'photo_failed_on_purpose'
        mine = [kind(x) for x in nat.up if fields(x)[7] == str(c.id)]
        assert mine[:2] == ['ACK', 'ERR'], mine
    finally:
        nat.close()


def test_server_down_leaves_the_other_working_and_both_down_means_management_lost(
        servers, device):
    a, b = servers.start(), servers.start()
    d = device({'servers': [addr(a), addr(b)]})
    wait(lambda: d.status()['up'] is True, 10, 'both reachable')
    servers.stop_server(a)
    wait(lambda: d.status()['servers'][0]['state'] == 'unreachable', 10, 'A unreachable')
    st = d.status()
    assert st['servers'][1]['state'] == 'reachable' and st['up'] is True
    assert st['servers'][0]['last_contact_s'] >= 3
    c = servers.call(b.queue, 'cam1', 'DSAL')
    wait(lambda: d.runs('disarm'), 10, 'DSAL through B')
    assert cmd_state(servers, b, c.id)['state'] == 'acked'
    assert 'EVENT management False' not in d.lines
    servers.stop_server(b)
    wait(lambda: 'EVENT management False' in d.lines, 10, 'management lost')
    assert d.status()['up'] is False
    assert not d.runs('arm')  # losing management never changes the armed state by itself


def test_management_returns_after_loss(servers, device):
    a = servers.start()
    port = a.port
    d = device({'servers': [addr(a)]})
    wait(lambda: d.status()['up'] is True, 10, 'reachable')
    servers.stop_server(a)
    wait(lambda: 'EVENT management False' in d.lines, 10, 'lost')
    servers.start(port=port)
    wait(lambda: d.lines.count('EVENT management True') == 2, 10, 'back')


def test_commands_reach_the_device_through_a_nat_that_rewrites_the_port(servers, device):
    a = servers.start()
    nat = Nat(('127.0.0.1', a.port))
    try:
        d = device({'servers': ['127.0.0.1:%d' % nat.port]})
        wait(lambda: servers.device(a, 'cam1'), 10, 'heartbeat')
        seen = servers.device(a, 'cam1').addr
        assert seen == ('127.0.0.1', nat.outside_port()) and seen[1] != d.port
        servers.call(a.queue, 'cam1', 'ENAL')
        wait(lambda: d.runs('arm'), 10, 'ENAL through the NAT')
        nat.rebind()  # the mapping changes: the next heartbeat teaches the server the new one
        wait(lambda: servers.device(a, 'cam1').addr[1] == nat.outside_port(), 10, 'new mapping')
        servers.call(a.queue, 'cam1', 'DSAL')
        wait(lambda: d.runs('disarm'), 10, 'DSAL after the rebind')
    finally:
        nat.close()


def _inject(d, data):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(data, ('127.0.0.1', d.port))
    s.close()


def test_bad_messages_are_refused_counted_and_answered_only_when_authenticated(
        servers, device):
    from firmware.lfcp import codec as lfcp
    a = servers.start()
    d = device({'servers': [addr(a)]})
    wait(lambda: beats(servers, a) >= 1, 10, 'heartbeat')
    k = lfcp.Hmac(KEY)
    big = int(time.time() * 1000)  # a fresh direct seq: milliseconds since 1970
    good = lfcp.encode('cam1', 'ENAL', (), big, k, lfcp.DOWN)
    cases = {
        'bad_mac': good[:-1] + (b'0' if good[-1:] != b'0' else b'1'),
        'name': lfcp.encode('cam9', 'ENAL', (), big + 1, lfcp.Hmac(KEY), lfcp.DOWN),
        'malformed': b'cam1,ENAL,\x01,0,0,0,0,0',
        'oversized': b'cam1,ENAL,' + b'x' * 300,
        'fields': b'cam1,ENAL,0,0',
        'plain': b'cam1,ENAL,0,0,0,0,0,0',
        'unknown': lfcp.encode('cam1', 'FOO', (), big + 2, k, lfcp.DOWN),
    }
    answers = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    answers.bind(('127.0.0.1', 0))
    answers.settimeout(0.3)
    try:
        for data in cases.values():
            answers.sendto(data, ('127.0.0.1', d.port))
        wait(lambda: all(d.status()['rejected'][k] >= 1 for k in cases), 10, 'all counted')
        got = []
        end = time.monotonic() + 2
        while time.monotonic() < end:
            try:
                got.append(lfcp.decode(answers.recvfrom(512)[0], k)[0])
            except socket.timeout:
                pass
        # ERR to the two authenticated senders only, and nothing ran
        assert sorted(f[2] for f in got if f[1] == 'ERR') == ['unknown_type', 'wrong_name']
        assert len(got) == 2
        assert not d.runs('arm')
        before = beats(servers, a)
        wait(lambda: beats(servers, a) >= before + 2, 10, 'heartbeats go on')
    finally:
        answers.close()


def test_replays_are_refused_even_after_a_reboot(servers, device, tmp_path):
    a = servers.start()
    nat = Nat(('127.0.0.1', a.port))
    try:
        d = device({'servers': ['127.0.0.1:%d' % nat.port]})
        servers.call(a.queue, 'cam1', 'ENAL')
        wait(lambda: d.runs('arm'), 10, 'ENAL')
        captured = [x for x in nat.down if kind(x) == 'ENAL'][0]
        _inject(d, captured)  # the reply's seq was used: refused
        wait(lambda: d.status()['rejected']['replay'] == 1, 5, 'replay refused')
        direct = lfcp_server.direct('127.0.0.1:%d' % d.port, 'cam1', KEY, 'SCAM', [])
        assert [f[1] for f in direct] == ['ACK']
        hw = servers.device(a, 'cam1').hw
        d.stop()

        d2 = device({'servers': ['127.0.0.1:%d' % nat.port]}, flash=tmp_path)
        before = beats(servers, a)
        wait(lambda: beats(servers, a) > before, 10, 'the server accepts the new seqs')
        assert servers.device(a, 'cam1').hw > hw
        _inject(d2, captured)
        wait(lambda: d2.status()['rejected']['replay'] == 1, 5, 'replay after reboot refused')
        assert not d2.runs('arm') and len(d.runs('camera_off')) == 1
        # the direct command captured on the wire: same story
        st = os.path.join(str(tmp_path), 'lfcp.json')
        assert os.path.exists(st)
    finally:
        nat.close()


def test_direct_commands_from_the_lan_are_answered_to_the_sender(servers, device):
    a = servers.start()
    d = device({'servers': [addr(a)]})
    got = lfcp_server.direct('127.0.0.1:%d' % d.port, 'cam1', KEY, 'STAT', [])
    assert [f[1] for f in got] == ['ACK', 'STAT'], got
    assert got[1][2].startswith('armed=0')
    got = lfcp_server.direct('127.0.0.1:%d' % d.port, 'cam1', KEY, 'DSLP', ['x'])
    assert [(f[1], f[2]) for f in got] == [('ACK', 'DSLP'), ('ERR', 'bad_parameter')]
    got = lfcp_server.direct('127.0.0.1:%d' % d.port, 'cam1', 'wrong-key-xxxxxxxx', 'ENAL', [],
                             timeout=0.5, tries=1)
    assert got == [] and not d.runs('arm')
    assert d.status()['rejected']['bad_mac'] == 1


def test_telegram_credentials_are_passed_and_never_logged(servers, device):
    a = servers.start()
    d = device({'servers': [addr(a)]})
    token = '123456:AAbbCCddEEffGGhhIIjjKKllMMnnOOppQQ'
    c = servers.call(a.queue, 'cam1', 'TLGC', [token, '-100200'])
    wait(lambda: d.runs('telegram_set'), 10, 'TLGC')
    assert '"chat_id": -100200' in d.runs('telegram_set')[0]
    assert cmd_state(servers, a, c.id)['state'] == 'acked'
    d.control('log token is ' + token)
    wait(lambda: any('token_is_***' in x['text']
                     for x in servers.call(lambda: list(a.devices['cam1'].logs))), 5, 'LOG')
    logged = [ln for ln in d.lines if not ln.startswith('RUN ')]
    assert not any(token in ln for ln in logged)
    assert token not in str(d.status())


def test_flood_is_rate_limited_and_heartbeats_go_on(servers, device):
    a = servers.start()
    d = device({'servers': [addr(a)], 'rate_limit': 20})
    wait(lambda: beats(servers, a) >= 1, 10, 'heartbeat')
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    junk = b'cam1,ENAL,0,0,0,0,0,0,1,' + b'ab' * 32
    for i in range(3000):
        s.sendto(junk, ('127.0.0.1', d.port))
        if i % 200 == 0:
            time.sleep(0.01)
    s.close()
    wait(lambda: d.status()['rejected']['rate'] > 500, 10, 'rate limiting')
    st = d.status()
    assert st['rejected']['bad_mac'] < 1000  # most never reached the MAC check
    before = beats(servers, a)
    wait(lambda: beats(servers, a) >= before + 2, 10, 'heartbeats after the flood')
    assert d.exited() is None and st['stats']['errors'] == 0


def test_alarm_is_retransmitted_until_acked_and_recorded_once(servers, device):
    a, b = servers.start(), servers.start()
    nat = Nat(('127.0.0.1', a.port))
    try:
        d = device({'servers': ['127.0.0.1:%d' % nat.port, addr(b)]})
        wait(lambda: d.status()['up'] is True, 10, 'reachable')
        nat.drop_down = lambda data: True  # A's answers are lost for now
        aid = d.control('alarm esp32_cam_motion_detected')
        wait(lambda: servers.call(lambda: len(b.devices['cam1'].alarms)) == 1, 5, 'B alarm')
        wait(lambda: len([x for x in nat.up if kind(x) == 'MOAL']) >= 3, 15, 'MOAL resent')
        assert d.status()['alarms_pending'] == 1
        nat.drop_down = None
        wait(lambda: d.status()['alarms_pending'] == 0, 20, 'A acknowledges')
        moal = [fields(x) for x in nat.up if kind(x) == 'MOAL']
        assert {f[7] for f in moal} == {aid} and len({f[8] for f in moal}) == len(moal)
        alarms = servers.call(lambda: list(a.devices['cam1'].alarms))
        assert [(x['text'], x['id']) for x in alarms] == [('esp32_cam_motion_detected', aid)]
        assert servers.call(lambda: len(b.devices['cam1'].alarms)) == 1
    finally:
        nat.close()


def test_alarm_gives_up_at_the_deadline(servers, device):
    d = device({'servers': ['127.0.0.1:%d' % Device.__init__.__globals__['free_port']()],
                'alarm_deadline_s': 2})
    d.control('alarm esp32_cam_motion_detected')
    wait(lambda: any('not acknowledged' in ln for ln in d.lines), 10, 'deadline')
    assert d.status()['alarms_pending'] == 0


def test_reboot_is_acked_before_going_down_and_not_repeated(servers, device, tmp_path):
    a = servers.start()
    nat = Nat(('127.0.0.1', a.port))
    try:
        d = device({'servers': ['127.0.0.1:%d' % nat.port]})
        c = servers.call(a.queue, 'cam1', 'RST')
        nat.drop_up = lambda data: kind(data) == 'ACK'  # the ACK is lost: A will resend RST
        wait(lambda: d.exited() is not None, 10, 'reboot')
        assert d.exited() == 3 and 'DOWN reboot' in d.lines
        assert any(kind(x) == 'ACK' and fields(x)[7] == str(c.id) for x in nat.up)
        nat.drop_up = None
        d2 = device({'servers': ['127.0.0.1:%d' % nat.port]}, flash=tmp_path)
        wait(lambda: cmd_state(servers, a, c.id)['state'] == 'acked', 10, 'RST acked')
        wait(lambda: d2.status()['stats']['duplicates'] >= 1, 10, 'the repeat counted')
        time.sleep(1)
        assert not d2.runs('reboot') and d2.exited() is None
        assert d2.status()['stats']['duplicates'] == 1
    finally:
        nat.close()


def test_sleep_duration_is_passed(servers, device):
    a = servers.start()
    d = device({'servers': [addr(a)]})
    c = servers.call(a.queue, 'cam1', 'DSLP', ['600'])
    wait(lambda: d.exited() is not None, 10, 'sleep')
    assert d.exited() == 4 and d.runs('sleep') == ['RUN sleep {"seconds": 600}']
    assert cmd_state(servers, a, c.id)['state'] == 'acked'


def test_service_stays_off_without_a_key(device):
    d = device({'servers': ['127.0.0.1:9'], 'key': ''})
    wait(lambda: 'SERVICE RETURNED' in d.lines, 10, 'service off')
    assert any('lfcp: off' in ln for ln in d.lines)
    assert d.status()['enabled'] is False


def test_a_reply_too_long_for_lfcp_does_not_stop_the_commands(servers, device):
    """An ERR naming a 60-character command id from a 31-character device is over LFCP's 128
    bytes: it cannot be sent (a send error), and the next command still runs."""
    name = 'c' * 31
    a = servers.start()
    d = device({'servers': [addr(a)]}, name=name, env={'LFCP_FAIL': 'arm'})
    lfcp = lfcp_server.lfcp
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        seq = int(time.time() * 1000)
        s.sendto(lfcp.encode(name, 'ENAL', ['0'] * 5 + ['i' * 60], seq, lfcp.Hmac(KEY), lfcp.DOWN),
                 ('127.0.0.1', d.port))
        wait(lambda: d.runs('arm'), 10, 'the ENAL to run (and fail)')
    finally:
        s.close()
    got = lfcp_server.direct('127.0.0.1:%d' % d.port, name, KEY, 'DSAL', [])
    assert got and got[0][1] == 'ACK', got
    wait(lambda: d.runs('disarm'), 10, 'DSAL to run after the ERR that could not be sent')
    assert d.status()['stats']['send_errors'] >= 1
