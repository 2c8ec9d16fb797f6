"""The alarm path against servers that do what the protocol allows (issue 12, issue 17 item 2 and
the LFCP parts of 6..8): the LFCP service on the VM (tools/testkit/vm/lfcp_driver.py), servers
played by sockets in the test, every datagram seen. Waits poll and are bounded."""
import json
import os
import re
import socket
import threading
import time

import pytest
from testkit.vm.lfcp_harness import KEY, REPO, Device, free_port, lfcp_server, wait

from firmware.lfcp import codec as lfcp

pytestmark = pytest.mark.timeout(90)
K = lfcp.Hmac(KEY)


class Wire:
    """A UDP endpoint on 127.0.0.1 that records what the device sends it (decoded fields, seq)
    and answers through reply(wire, fields, seq, addr), when set."""

    def __init__(self, host='127.0.0.1', key=K, reply=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.key = key
        self.reply = reply
        self.got = []  # (fields, seq, addr)
        self.raw = []
        self.running = True
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while self.running:
            try:
                data, addr = self.sock.recvfrom(512)
            except (socket.timeout, OSError):
                continue
            self.raw.append((data, addr))
            try:
                f, seq = lfcp.decode(data, self.key)
            except lfcp.LfcpError:
                continue
            self.got.append((f, seq, addr))
            if self.reply:
                self.reply(self, f, seq, addr)

    def send(self, data, addr):
        self.sock.sendto(data, addr)

    def of(self, typ):
        return [g for g in self.got if g[0][1] == typ]

    def close(self):
        self.running = False
        self.sock.close()


def plain(typ, params=(), name='cam1'):
    return lfcp.encode(name, typ, params)


def signed(typ, params, seq, name='cam1'):
    return lfcp.encode(name, typ, params, seq, K, lfcp.DOWN)


@pytest.fixture
def rig(tmp_path):
    made = []

    def make(lfcp_cfg, wires=1, env=None, **wire_kw):
        ws = [Wire(**wire_kw) for _ in range(wires)]
        made.extend(ws)
        cfg = dict({'key': KEY, 'heartbeat_s': 1, 'unreachable_after_s': 3,
                    'servers': ['127.0.0.1:%d' % w.port for w in ws]}, **lfcp_cfg)
        d = Device(tmp_path, cfg, env=env)
        made.append(d)
        d.start()
        return (d,) + tuple(ws)
    yield make
    for x in made:
        (x.stop if isinstance(x, Device) else x.close)()


def dev_addr(d):
    return ('127.0.0.1', d.port)


# --- issue 12.1: a plain command delivered again before its ACK arrived runs once -------------

def test_plain_command_delivered_again_before_the_ack_arrived_runs_once(rig):
    d, a = rig({'legacy': True, 'key': ''})
    wait(lambda: a.of('HEARTBEAT'), 10, 'a heartbeat')
    a.send(plain('ENAL'), a.of('HEARTBEAT')[-1][2])
    wait(lambda: a.of('ACK'), 5, 'the ACK')
    wait(lambda: d.runs('arm'), 5, 'arm')
    n = len(a.got)
    d.control('log from_a_command_of_server_b')  # a LOG that left before A saw the ACK ...
    wait(lambda: a.of('LOG'), 5, 'the LOG')
    a.send(plain('ENAL'), a.of('LOG')[-1][2])  # ... answered with A's oldest un-ACKed command
    wait(lambda: len(a.of('ACK')) >= 2, 5, 'the second ACK')  # ACKed again ...
    assert len(d.runs('arm')) == 1  # ... not run again
    assert d.status()['stats']['duplicates'] == 1
    assert len(a.got) > n


# --- issue 12.2: a reply with another device name counts for nothing ---------------------------

def test_plain_reply_with_another_name_keeps_nothing_alive(rig):
    def reply(w, f, seq, addr):
        if f[1] != 'ACK':
            w.send(plain('ACK', (f[1], 0, 0, 0, 0, f[7]), name='cam9'), addr)
    d, a = rig({'legacy': True, 'key': ''}, reply=reply)
    d.control('alarm esp32_cam_motion_detected')
    wait(lambda: len(a.of('MOAL')) >= 2, 10, 'MOAL retransmitted')
    wait(lambda: d.status()['servers'][0]['state'] == 'unreachable', 10, 'unreachable')
    st = d.status()
    assert st['servers'][0]['replies'] == 0 and st['alarms_pending'] == 1, st
    assert st['rejected']['name'] >= 2


# --- issue 12.3: an alarm is acknowledged by its own ACK only ---------------------------------

def test_plain_ack_of_a_log_does_not_acknowledge_a_lost_alarm(rig):
    d, a = rig({'legacy': True, 'key': ''})
    wait(lambda: a.of('HEARTBEAT'), 10, 'a heartbeat')
    a.send(plain('ACK', ('HEARTBEAT',)), a.of('HEARTBEAT')[-1][2])
    d.control('log something_happened')
    wait(lambda: a.of('LOG'), 5, 'the LOG')
    aid = d.control('alarm esp32_cam_motion_detected')  # this MOAL is "lost": never answered
    wait(lambda: a.of('MOAL'), 5, 'the MOAL')
    a.send(plain('ACK', ('LOG',)), a.of('LOG')[-1][2])  # the LOG's ACK arrives afterwards
    a.send(plain('ACK'), a.of('LOG')[-1][2])  # and an ACK naming nothing
    wait(lambda: len(a.of('MOAL')) >= 2, 10, 'the MOAL retransmitted')
    assert d.status()['alarms_pending'] == 1
    m = a.of('MOAL')[-1]
    assert m[0][7] == aid  # every copy carries the alarm id
    a.send(plain('ACK', ('MOAL', 0, 0, 0, 0, aid)), m[2])
    wait(lambda: d.status()['alarms_pending'] == 0, 5, 'the alarm acknowledged')
    assert d.status()['alarms_acknowledged'] == 1


def test_authenticated_alarm_is_acknowledged_by_a_reply_to_any_of_its_copies(rig):
    d, a = rig({})
    aid = d.control('alarm esp32_cam_motion_detected')
    wait(lambda: len(a.of('MOAL')) >= 2, 10, 'two copies')
    first = a.of('MOAL')[0]
    assert first[0][7] == aid
    a.send(signed('ACK', ('MOAL', 0, 0, 0, 0, aid), first[1]), first[2])  # a late answer
    wait(lambda: d.status()['alarms_pending'] == 0, 5, 'acknowledged')


# --- issue 12.5 and 12.6: no special seq, a bounded future --------------------------------------

def test_signed_seq_zero_is_never_accepted(rig):
    d, a = rig({})
    wait(lambda: a.of('HEARTBEAT'), 10, 'a heartbeat')
    stranger = Wire()
    try:
        for _ in range(3):
            stranger.send(signed('ENAL', (), 0), dev_addr(d))
            a.send(signed('ENAL', (), 0), dev_addr(d))
        wait(lambda: d.status()['rejected']['replay'] >= 6, 5, 'seq 0 refused')
        assert not d.runs('arm')
    finally:
        stranger.close()


def test_far_future_direct_seq_is_refused_and_never_stored(rig, tmp_path):
    d, a = rig({})
    wait(lambda: a.of('HEARTBEAT'), 10, 'a heartbeat')
    got = lfcp_server.direct('127.0.0.1:%d' % d.port, 'cam1', KEY, 'WCAM', [], 0.5, 1)
    assert [f[1] for f in got] == ['ACK']
    t = Wire()
    try:
        t.send(signed('SCAM', (0, 0, 0, 0, 1), 10 ** 18), dev_addr(d))
        wait(lambda: d.status()['rejected']['future'] == 1, 5, 'refused')
    finally:
        t.close()
    assert not d.runs('camera_off')
    state = json.load(open(os.path.join(str(tmp_path), 'lfcp.json')))
    assert state['direct'] < 10 ** 13, state
    got = lfcp_server.direct('127.0.0.1:%d' % d.port, 'cam1', KEY, 'SCAM', [], 1, 3)
    assert [f[1] for f in got] == ['ACK'] and len(d.runs('camera_off')) == 1
    d.stop()
    d.start()  # and after a restart, too
    got = lfcp_server.direct('127.0.0.1:%d' % d.port, 'cam1', KEY, 'STAT', [], 1, 3)
    assert [f[1] for f in got] == ['ACK', 'STAT']


# --- issue 12.7: strangers never starve the servers ---------------------------------------------

def test_junk_from_many_addresses_leaves_the_servers_reachable(servers, tmp_path):
    a, b = servers.start(), servers.start()
    d = Device(tmp_path, {'key': KEY, 'heartbeat_s': 1, 'unreachable_after_s': 3,
                          'servers': ['127.0.0.1:%d' % a.port, '127.0.0.1:%d' % b.port]}).start()
    junk = []
    try:
        wait(lambda: d.status()['up'] is True, 10, 'both reachable')
        for i in range(40):  # 40 sources, 127.0.1.x: loopback all the same
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(('127.0.1.%d' % (i + 1), 0))
            junk.append(s)
        ids = [servers.call(srv.queue, 'cam1', t).id for srv, t in
               ((a, 'WCAM'), (b, 'SCAM'), (a, 'ENAL'), (b, 'DSAL'))]
        worst = []
        end = time.monotonic() + 8
        next_look = 0
        i = 0
        while time.monotonic() < end:  # 10 datagrams/s from each, spread evenly, for 8 s
            for _ in range(4):
                junk[i % 40].sendto(b'x', dev_addr(d))
                i += 1
            if time.monotonic() > next_look:
                next_look = time.monotonic() + 0.3
                worst.append([x['state'] for x in d.status()['servers']])
            time.sleep(0.01)
        assert all(w == ['reachable', 'reachable'] for w in worst), worst
        states = [c['state'] for srv in (a, b) for c in servers.commands(srv, 'cam1')]
        assert sorted(states) == ['acked'] * 4, (states, ids)
        assert d.status()['rejected']['fields'] + d.status()['rejected']['rate'] >= 40
    finally:
        for s in junk:
            s.close()
        d.stop()


# --- issue 12.8: replies from another port, discovery, strict original fields -------------------

def test_reply_from_another_port_is_taken_under_host_refused_under_exact(rig):
    def reply(w, f, seq, addr):  # a server behind a load balancer: answers from another socket
        if f[1] == 'HEARTBEAT' and not w.sent_cmd:
            w.sent_cmd = True
            w.other.sendto(plain('WCAM'), addr)
        elif f[1] != 'ACK':
            w.other.sendto(plain('ACK', (f[1],)), addr)
    for rule, runs in (('host', 1), ('exact', 0)):
        d, a = rig({'legacy': True, 'key': '', 'reply_from': rule})
        a.sent_cmd = False
        a.other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        a.reply = reply
        if runs:
            wait(lambda: a.of('ACK'), 10, 'the ACK')
            wait(lambda: d.status()['servers'][0]['state'] == 'reachable', 10, 'reachable')
            assert len(a.of('ACK')) == 1 and len(d.runs('camera_on')) == 1
        else:
            wait(lambda: d.status()['rejected']['unsolicited'] >= 2, 10, 'refused')
            assert not d.runs('camera_on')
        d.stop()
        a.other.close()


def test_discovery_sends_the_bare_name_and_strict_original_leaves_added_fields_zero(rig):
    disc = Wire(key=None)
    try:
        def reply(w, f, seq, addr):
            if f[1] == 'HEARTBEAT' and not w.sent_cmd:
                w.sent_cmd = True
                w.send(plain('ENAL'), addr)
            elif f[1] != 'ACK':
                w.send(plain('ACK'), addr)
        d, a = rig({'legacy': True, 'key': '', 'strict_original': True,
                    'discovery': '127.0.0.1:%d' % disc.port}, key=None)
        a.sent_cmd = False
        a.reply = reply
        wait(lambda: [r for r in disc.raw if r[0] == b'cam1'], 10, 'the discovery datagram')
        wait(lambda: len(a.of('HEARTBEAT')) >= 2 and a.of('ACK'), 10, 'heartbeats, an ACK')
        d.control('alarm esp32_cam_motion_detected')
        wait(lambda: a.of('MOAL'), 10, 'MOAL')
        for f, _, _ in a.got:
            if f[1] in ('HEARTBEAT', 'ACK'):
                assert f[2:] == ['0'] * 6, f
            if f[1] == 'MOAL':
                assert f[3:] == ['0'] * 5, f
        assert a.of('HEARTBEAT')[-1][0][2] == '0'  # armed, and the original's HEARTBEAT says 0
        assert d.runs('arm')
    finally:
        disc.close()


# --- issue 12.9: the documented TLGC example is accepted; a bad token gets bad_token -------------

def test_documented_tlgc_token_is_accepted_and_a_bad_one_is_bad_token(rig):
    doc = open(os.path.join(REPO, 'docs', 'protocol.md')).read()
    token = re.search(r'S> cam1,TLGC,([^,]+),', doc).group(1)
    d, a = rig({})
    got = lfcp_server.direct('127.0.0.1:%d' % d.port, 'cam1', KEY, 'TLGC', [token, '42'], 1, 3)
    assert [f[1] for f in got] == ['ACK'] and len(d.runs('telegram_set')) == 1
    got = lfcp_server.direct('127.0.0.1:%d' % d.port, 'cam1', KEY, 'TLGC', ['123:short', '42'],
                             1, 3)
    assert [(f[1], f[2]) for f in got] == [('ACK', 'TLGC'), ('ERR', 'bad_token')]
    assert len(d.runs('telegram_set')) == 1


# --- issue 17.2: reflected datagrams never count --------------------------------------------------

def test_reflected_moal_and_heartbeats_never_count(rig):
    d, a = rig({})
    stop = []

    def reflect():
        seen = 0
        while not stop:
            for data, addr in a.raw[seen:]:
                a.send(data, dev_addr(d))  # the device's own datagram, back from the server
                seen += 1
            time.sleep(0.02)
    threading.Thread(target=reflect, daemon=True).start()
    try:
        d.control('alarm esp32_cam_motion_detected')
        wait(lambda: len(a.of('MOAL')) >= 3, 15, 'MOAL retransmitted')
        wait(lambda: d.status()['servers'][0]['state'] == 'unreachable', 10, 'unreachable')
        st = d.status()
        assert st['alarms_pending'] == 1 and st['servers'][0]['replies'] == 0, st
        assert st['rejected']['bad_mac'] >= 3
    finally:
        stop.append(1)


# --- issue 17.6..8: LOG flood coalesced, lfcp.json broken, refused sleep ------------------------

def test_log_flood_is_coalesced_with_counts_not_dropped(servers, tmp_path):
    a = servers.start()
    d = Device(tmp_path, {'key': KEY, 'heartbeat_s': 1, 'unreachable_after_s': 3,
                          'servers': ['127.0.0.1:%d' % a.port]}).start()
    try:
        wait(lambda: servers.device(a, 'cam1'), 10, 'heartbeat')
        for i in range(40):
            d.control('log garbage_request_%d' % (i % 5) if i % 2 else 'log same_line')
        st = d.status()['stats']
        assert st['logs_dropped'] == 0 and st['logs_coalesced'] >= 20, st

        def total():
            n = 0
            for x in servers.call(lambda: list(a.devices['cam1'].logs)):
                t = x['text']
                if 'garbage_request' in t or 'same_line' in t:
                    m = re.search(r'_x(\d+)', t)
                    k = re.search(r'_\+(\d+)_more', t)
                    n += (int(m.group(1)) if m else 1) + (int(k.group(1)) if k else 0)
            return n
        wait(lambda: total() == 40, 30, 'every line accounted for')
    finally:
        d.stop()


def test_broken_lfcp_json_is_moved_aside_and_lfcp_starts_fresh(rig, tmp_path):
    with open(os.path.join(str(tmp_path), 'lfcp.json'), 'w') as f:
        f.write('[1]')
    d, a = rig({})
    wait(lambda: len(a.of('HEARTBEAT')) >= 2, 10, 'heartbeats')
    assert os.path.exists(os.path.join(str(tmp_path), 'lfcp.json.bad'))
    assert any('lfcp.json is broken' in ln for ln in d.lines), d.output()
    assert isinstance(json.load(open(os.path.join(str(tmp_path), 'lfcp.json'))), dict)


def test_refused_sleep_sends_no_going_to_deep_sleep(servers, tmp_path):
    a = servers.start()
    d = Device(tmp_path, {'key': KEY, 'heartbeat_s': 1, 'unreachable_after_s': 3,
                          'servers': ['127.0.0.1:%d' % a.port]}, env={'LFCP_FAIL': 'sleep'}).start()
    try:
        c = servers.call(a.queue, 'cam1', 'DSLP', ['600'])
        wait(lambda: [x for x in servers.commands(a, 'cam1')
                      if x['id'] == c.id and x['state'] == 'failed'], 10, 'DSLP refused')

        def logs():
            return [x['text'] for x in servers.call(lambda: list(a.devices['cam1'].logs))]
        wait(lambda: any('sleep_failed' in t for t in logs()), 10, 'the failure in the LOG')
        assert not [t for t in logs() if 'deep_sleep' in t], logs()
    finally:
        d.stop()


def test_an_alarm_before_the_service_runs_keeps_lfcp_json(tmp_path):
    """An alarm raised before the LFCP task starts (motion right after boot) took a seq before
    lfcp.json was read, and its save wrote over the ids run and the plain memory."""
    import subprocess
    from testkit.vm.lfcp_harness import MP
    flash = str(tmp_path)
    with open(os.path.join(flash, 'lfcp.json'), 'w') as f:
        json.dump({'seq': 5000, 'direct': 0, 'done': {'127.0.0.1:9': ['1732233000123']},
                   'plain': {'127.0.0.1:9': ['RST,0,0,0,0,0']}}, f)
    script = (
        'from firmware.config import schema\nfrom firmware.core.log import Log\n'
        'from firmware.core.events import Bus\nfrom firmware.core.commands import Commands\n'
        'from firmware.lfcp.client import LfcpClient\n'
        'cfg = schema.Config({"device": {"name": "cam1"}, "lfcp": {"legacy": True,'
        ' "servers": ["127.0.0.1:9"]}})\n'
        'log = Log()\nc = LfcpClient(cfg, log, Bus(log), Commands(log))\n'
        'print("ALARM", c.alarm())\n')
    out = subprocess.run([MP, '-c', script], cwd=flash, capture_output=True, text=True, timeout=30,
                         env=dict(os.environ, MICROPYPATH='.frozen:' + REPO))
    assert out.returncode == 0, out.stdout + out.stderr
    assert 'ALARM 5001' in out.stdout, out.stdout  # the seq goes on from the stored mark
    st = json.load(open(os.path.join(flash, 'lfcp.json')))
    assert st['done'] == {'127.0.0.1:9': ['1732233000123']}, st
    assert st['plain'] == {'127.0.0.1:9': ['RST,0,0,0,0,0']} and st['seq'] > 5001, st
