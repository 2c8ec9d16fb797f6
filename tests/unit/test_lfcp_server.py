"""The reference management server: its protocol side in-process, its CLI and JSON API live."""
import json
import os
import socket
import subprocess
import sys

import pytest
from testkit.vm.lfcp_harness import KEY, REPO, free_port, lfcp_server, wait

from firmware.lfcp import codec as lfcp

pytestmark = pytest.mark.timeout(60)
K = lfcp.Hmac(KEY)
DEV = ('127.0.0.1', 40000)


class Wire:
    def __init__(self):
        self.sent = []

    def sendto(self, data, addr):
        self.sent.append((lfcp.decode(data, K, lfcp.DOWN)[0] if data.count(b',') == 9
                          else data.decode().split(','), addr))


def server(**kw):
    s = lfcp_server.LfcpServer(KEY, **kw)
    s.connection_made(Wire())
    return s


def msg(typ, params=(), seq=1, name='cam1', addr=DEV):
    return lfcp.encode(name, typ, params, seq, K), addr


def replies(s):
    return [f for f, _ in s.transport.sent]


def test_heartbeat_is_answered_to_the_observed_address_and_recorded():
    s = server()
    s.datagram_received(*msg('HEARTBEAT', ('1',), 5, addr=('10.0.0.9', 61000)))
    assert s.transport.sent == [(['cam1', 'ACK', 'HEARTBEAT', '0', '0', '0', '0', '0'],
                                 ('10.0.0.9', 61000))]
    d = s.devices['cam1'].summary(60)
    assert d['armed'] is True and d['reachable'] and d['address'] == '10.0.0.9:61000'


def test_commands_go_one_per_reply_until_acked_then_expire():
    s = server(max_tries=3)
    a = s.queue('cam1', 'ENAL')
    b = s.queue('cam1', 'TLGC', ['123:abc', '42'])
    s.datagram_received(*msg('HEARTBEAT', seq=1))
    assert replies(s)[-1][1] == 'ENAL' and replies(s)[-1][7] == str(a.id)
    s.datagram_received(*msg('ACK', ('ENAL', 0, 0, 0, 0, a.id), 2))  # never answered
    assert len(replies(s)) == 1 and a.state == 'acked'
    for seq in (3, 4, 5, 6):
        s.datagram_received(*msg('HEARTBEAT', seq=seq))
    assert [r[1] for r in replies(s)] == ['ENAL', 'TLGC', 'TLGC', 'TLGC', 'ACK']
    assert b.state == 'expired' and b.as_dict()['params'][0] == '***'


def test_err_marks_the_command_failed():
    s = server()
    c = s.queue('cam1', 'TLGS')
    s.datagram_received(*msg('HEARTBEAT', seq=1))
    s.datagram_received(*msg('ACK', ('TLGS', 0, 0, 0, 0, c.id), 2))
    s.datagram_received(*msg('ERR', ('no_camera', 'TLGS', 0, 0, 0, c.id), 3))
    assert c.state == 'failed' and c.error == 'no_camera'
    assert replies(s)[-1][1:3] == ['ACK', 'ERR']


def test_replay_bad_mac_plain_and_unknown_are_refused():
    s = server()
    s.datagram_received(*msg('MOAL', ('esp32_cam_motion_detected', 0, 0, 0, 0, 7), 10))
    s.datagram_received(*msg('MOAL', ('esp32_cam_motion_detected', 0, 0, 0, 0, 7), 10))
    s.datagram_received(*msg('MOAL', ('esp32_cam_motion_detected', 0, 0, 0, 0, 7), 9))
    s.datagram_received(lfcp.encode('cam1', 'HEARTBEAT', (), 11, lfcp.Hmac('nope')), DEV)
    s.datagram_received(b'cam1,HEARTBEAT,0,0,0,0,0,0', DEV)
    s.datagram_received(*msg('ENAL', seq=12))  # a command type from a device
    assert s.rejected == {'replay': 2, 'bad_mac': 1, 'plain': 1, 'unknown': 1}
    assert len(replies(s)) == 1 and len(s.devices['cam1'].alarms) == 1


def test_alarm_retransmission_is_answered_and_recorded_once():
    s = server()
    for seq in (20, 21, 22):
        s.datagram_received(*msg('MOAL', ('esp32_cam_motion_detected', 0, 0, 0, 0, 19), seq))
    assert [r[2] for r in replies(s)] == ['MOAL'] * 3
    assert [a['id'] for a in s.devices['cam1'].alarms] == ['19']


def test_legacy_server_answers_plain_devices_in_plain():
    s = server(legacy=True)
    s.queue('old', 'WCAM')
    s.datagram_received(b'old,HEARTBEAT,0,0,0,0,0,0', DEV)
    f, _ = s.transport.sent[0]
    assert f[:2] == ['old', 'WCAM'] and len(f) == 8
    s.datagram_received(b'old,ACK,0,0,0,0,0,0', DEV)
    assert s.devices['old'].history[0].state == 'acked'


def test_state_file_keeps_high_water_marks_and_queues(tmp_path):
    path = str(tmp_path / 'a.json')
    s = server(state=path)
    s.datagram_received(*msg('HEARTBEAT', seq=50))
    s.queue('cam1', 'DSAL')
    s.save()
    s2 = server(state=path)
    s2.datagram_received(*msg('HEARTBEAT', seq=50))
    assert s2.rejected['replay'] == 1
    s2.datagram_received(*msg('HEARTBEAT', seq=51))
    assert replies(s2)[-1][1] == 'DSAL'
    assert s2.ids() > s.ids.last


def test_queue_refuses_bad_input():
    s = server()
    for args in (('cam 1', 'ENAL'), ('cam1', 'HEARTBEAT'), ('cam1', 'TLGC', ['x'])):
        with pytest.raises(ValueError):
            s.queue(*args)


def test_serve_cli_and_json_api(tmp_path):
    udp, api = free_port(), free_port(socket.SOCK_STREAM)
    keyfile = tmp_path / 'key'
    keyfile.write_text(KEY + '\n')
    tool = [sys.executable, os.path.join(REPO, 'tools', 'peers', 'lfcp_server.py')]
    proc = subprocess.Popen(tool + ['serve', '--host', '127.0.0.1', '--port', str(udp),
                                    '--api', '127.0.0.1:%d' % api, '--key-file', str(keyfile)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    cli = lambda *a: subprocess.run(tool + [a[0], '--api', '127.0.0.1:%d' % api] + list(a[1:]),
                                    capture_output=True, text=True, timeout=20)
    try:
        assert 'authenticated only' in proc.stdout.readline()
        out = cli('queue', 'cam1', 'DSLP', '600')
        assert out.returncode == 0, out.stderr
        cid = json.loads(out.stdout)['id']
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(5)
        s.sendto(lfcp.encode('cam1', 'HEARTBEAT', ('0',), 1, K), ('127.0.0.1', udp))
        f, seq = lfcp.decode(s.recvfrom(512)[0], K, lfcp.DOWN)
        assert f[1:3] == ['DSLP', '600'] and f[7] == str(cid) and seq == 1
        s.sendto(lfcp.encode('cam1', 'ACK', ('DSLP', 0, 0, 0, 0, cid), 2, K), ('127.0.0.1', udp))
        s.close()
        wait(lambda: json.loads(cli('show', 'cam1').stdout)['commands'][0]['state'] == 'acked',
             10, 'acked in the API')
        devices = json.loads(cli('devices').stdout)
        assert [(d['name'], d['reachable'], d['authenticated']) for d in devices] == [
            ('cam1', True, True)]
        assert cli('queue', 'cam1', 'BOGUS').returncode != 0
        assert 'forgotten' in cli('forget', 'cam1').stdout
        assert json.loads(cli('devices').stdout) == []
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_reflected_reply_is_refused_the_mac_is_bound_to_the_direction():
    """issue 17.2, the server side: the server's own reply sent back to it never verifies."""
    s = server()
    s.datagram_received(*msg('HEARTBEAT', ('1',), 5))
    reply = lfcp.encode('cam1', 'ACK', ('HEARTBEAT',), 5, K, lfcp.DOWN)
    s.datagram_received(reply, DEV)
    s.datagram_received(lfcp.encode('cam1', 'HEARTBEAT', (), 6, K, lfcp.DOWN), DEV)
    assert s.rejected['bad_mac'] == 2 and s.devices['cam1'].heartbeats == 1


def test_a_moal_is_answered_with_its_own_ack_even_with_commands_queued():
    s = server()
    c = s.queue('cam1', 'ENAL')
    s.datagram_received(*msg('MOAL', ('esp32_cam_motion_detected', 0, 0, 0, 0, 77), 3))
    assert replies(s)[-1][1:3] == ['ACK', 'MOAL'] and replies(s)[-1][7] == '77'
    s.datagram_received(*msg('HEARTBEAT', seq=4))
    assert replies(s)[-1][1] == 'ENAL' and replies(s)[-1][7] == str(c.id)
