"""Legacy mode against tools/peers/lfcp_peer_plain.py, a plain LFCP server written only from the
reference document: the firmware must interoperate with it, yet refuse TLGC without a MAC."""
import json
import os
import subprocess
import sys
import threading

import pytest
from testkit.vm.lfcp_harness import KEY, REPO, Device, free_port, lfcp_server, wait

pytestmark = pytest.mark.timeout(90)


class Peer:
    def __init__(self, *commands):
        self.port = free_port()
        self.events = []
        argv = [sys.executable, os.path.join(REPO, 'tools', 'peers', 'lfcp_peer_plain.py'),
                '--port', str(self.port), '--seconds', '60']
        for c in commands:
            argv += ['--command', c]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        wait(lambda: self.events, 10, 'the plain peer')

    def _read(self):
        for line in self.proc.stdout:
            self.events.append(json.loads(line))

    def got(self, typ):
        return [e for e in self.events if e['event'] == 'received' and e['type'] == typ]

    def stop(self):
        self.proc.kill()
        self.proc.wait(5)


@pytest.fixture
def run(tmp_path):
    made = []

    def start(lfcp, *commands):
        peer = Peer(*commands)
        made.append(peer)
        d = Device(tmp_path, dict({'servers': ['127.0.0.1:%d' % peer.port], 'heartbeat_s': 1,
                                   'unreachable_after_s': 3}, **lfcp))
        made.append(d)
        return peer, d.start()
    yield start
    for x in made:
        x.stop()


def test_plain_peer_interoperates_in_legacy_mode(run):
    token = '123456:AAbbCCddEEffGGhhIIjjKKll'
    peer, d = run({'legacy': True, 'key': ''}, 'ENAL', 'TLGC/%s/42' % token, 'WCAM')
    wait(lambda: len(peer.got('ACK')) >= 3, 15, 'three ACKs')
    wait(lambda: peer.got('ERR'), 10, 'the TLGC refusal')
    # an ACK goes out when a command is taken, its run follows on the command worker
    wait(lambda: d.runs('arm') and d.runs('camera_on'), 10, 'ENAL and WCAM run')
    assert len(d.runs('arm')) == 1 and len(d.runs('camera_on')) == 1
    assert not d.runs('telegram_set')
    assert [e['fields'][0] for e in peer.got('ERR')] == ['auth_required']
    assert not [e for e in peer.events if e['event'] == 'dropped']  # every datagram was plain
    assert d.status()['servers'][0]['state'] == 'reachable'
    logs = [e['fields'][0] for e in peer.got('LOG')]
    assert 'alarm_enabled_request_via_lfcp' in logs and 'camera_init_request_via_lfcp' in logs
    d.control('alarm esp32_cam_motion_detected')
    wait(lambda: peer.got('MOAL'), 10, 'MOAL')
    assert peer.got('MOAL')[0]['fields'][0] == 'esp32_cam_motion_detected'
    wait(lambda: d.status()['alarms_pending'] == 0, 10, 'MOAL answered')
    assert token not in '\n'.join(ln for ln in d.lines if not ln.startswith('RUN'))


def test_legacy_with_a_key_still_takes_authenticated_direct_commands(run):
    peer, d = run({'legacy': True, 'key': KEY})
    wait(lambda: peer.got('HEARTBEAT'), 10, 'plain heartbeat')
    got = lfcp_server.direct('127.0.0.1:%d' % d.port, 'cam1', KEY, 'TLGC',
                             ['123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw', '42'])
    assert [f[1] for f in got] == ['ACK'] and len(d.runs('telegram_set')) == 1
    got = lfcp_server.direct('127.0.0.1:%d' % d.port, 'cam1', '', 'ENAL', [], 0.5, 1)
    assert got == [] and not d.runs('arm')  # plain and unsolicited: refused
    assert d.status()['rejected']['unsolicited'] == 1


def test_authenticated_device_refuses_the_plain_peer(run):
    peer, d = run({'key': KEY}, 'ENAL')
    wait(lambda: len([e for e in peer.events if e['event'] == 'dropped']) >= 2, 10, 'drops')
    assert not peer.got('HEARTBEAT')  # the plain parser sees 10 fields and drops them
    assert not d.runs('arm')
