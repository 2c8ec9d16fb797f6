"""The LFCP server's MQTT bridge (tools/peers/mqtt_bridge.py): the whole firmware speaks LFCP
only, the reference server bridges it into a real Mosquitto, a Home Assistant stand-in (a paho
client) sees the device, its alarms, and commands it."""
import json
import time

import pytest
from peers import mqtt_bridge
from testkit.broker import USERS, Broker
from testkit.ha_schema import check_discovery
from testkit.peers import peers, wait  # noqa: F401  (peers is a fixture)

pytestmark = pytest.mark.timeout(90)
NAME = 'testcam'
T = 'lfcp/' + NAME + '/'


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / 'broker').start()
    yield b
    b.stop()


def bridged(peers, broker, password=USERS['lfcp'], port=None, **kw):
    srv = peers.lfcp(unreachable_after=4)
    bridge = peers._servers.call(lambda: mqtt_bridge.MqttBridge(
        srv, peers._servers.loop, '127.0.0.1', port or broker.port, 'lfcp', password, **kw))
    peers._stops.append(bridge.close)
    peers._servers.call(lambda: peers._servers.loop.create_task(bridge.run(0.2)))
    return srv, bridge


def bridge_configs(w):
    out = {}
    for topic, payload in list(w.last.items()):
        p = topic.split('/')
        if p[0] == 'homeassistant' and p[2] == 'lfcp_' + NAME and payload:
            out[(p[1], p[3])] = json.loads(payload)
    return out


def test_an_lfcp_camera_appears_on_the_broker_and_takes_commands(firmware, peers, broker):
    w = broker.watch()
    try:
        srv, bridge = bridged(peers, broker)
        dev = firmware(peers.config(servers=[srv], alarm={'event_gap_s': 2}))
        assert w.wait(T + 'availability', lambda p: p == b'online', timeout=30)
        assert w.wait('lfcp/bridge/availability') == b'online'
        wait(lambda: len(bridge_configs(w)) >= 5, 15, 'discovery configs')
        got = bridge_configs(w)
        assert {('alarm_control_panel', 'alarm'), ('binary_sensor', 'motion'),
                ('sensor', 'last_alarm'), ('sensor', 'status'), ('button', 'status')} <= set(got)
        assert ('button', 'reboot') not in got
        for (component, oid), conf in got.items():
            assert [a['topic'] for a in conf['availability']] == ['lfcp/bridge/availability',
                                                                  T + 'availability']
            assert conf['availability_mode'] == 'all'
            assert check_discovery(component, conf) == [], (component, conf)
        assert w.wait(T + 'alarm') == b'disarmed'

        # arming from MQTT: queued as ENAL, delivered with the next heartbeat reply, acked
        m = w.mark()
        w.publish(T + 'alarm/set', 'ARM_AWAY')
        r = json.loads(w.wait(T + 'result', since=m))
        assert r['ok'] and r['type'] == 'ENAL'
        assert w.wait(T + 'alarm', lambda p: p == b'armed_away', since=m, timeout=20)
        assert dev.status()['alarm']['state'] == 'armed'

        # motion on the camera -> MOAL -> the motion sensor and the panel on the broker
        m = w.mark()
        dev.board.control('camera', motion=True)
        ev = json.loads(w.wait(T + 'alarm/event', since=m, timeout=30))
        assert ev['text'] == 'esp32_cam_motion_detected'
        assert w.wait(T + 'motion', lambda p: p == b'ON', since=m)
        assert w.wait(T + 'alarm', lambda p: p == b'triggered', since=m)
        dev.board.control('camera', motion=False)

        # bad payloads and unknown devices: an error on the result topic, the bridge goes on
        m = w.mark()
        w.publish(T + 'alarm/set', 'ARM_SOMETIMES')
        assert 'ARM_AWAY or DISARM' in json.loads(w.wait(T + 'result', since=m))['error']
        m = w.mark()
        w.publish('lfcp/nosuchcam/alarm/set', 'DISARM')
        assert 'no such device' in json.loads(w.wait('lfcp/nosuchcam/result', since=m))['error']
        m = w.mark()
        w.publish(T + 'reboot/press', 'PRESS')
        assert '--mqtt-destructive' in json.loads(w.wait(T + 'result', since=m))['error']

        # the device goes away: LFCP liveness -> offline
        m = w.mark()
        dev.board.stop()
        assert w.wait(T + 'availability', lambda p: p == b'offline', since=m, timeout=20)
    finally:
        w.close()


def test_wrong_bridge_credentials_are_named(peers, broker):
    srv, bridge = bridged(peers, broker, password='wrong-password')
    deadline = time.monotonic() + 15
    while bridge.refused is None:
        assert time.monotonic() < deadline, 'no refusal recorded'
        time.sleep(0.1)
    assert 'authori' in bridge.refused.lower() or 'password' in bridge.refused.lower()


def test_the_bridge_over_tls(peers, tmp_path):
    from peers.fake_telegram import make_ca
    pki = make_ca(str(tmp_path / 'pki'), name='broker test CA')
    b = Broker(tmp_path / 'tls-broker', tls=pki).start()
    w = b.watch()
    try:
        srv, bridge = bridged(peers, b, port=b.tls_port, ca=pki['ca_pem'])
        assert bridge.connected.wait(20), bridge.refused
        assert w.wait('lfcp/bridge/availability') == b'online'
    finally:
        w.close()
        b.stop()


def test_the_bridge_announces_again_after_a_broker_restart(peers, broker):
    import socket
    from firmware.lfcp import codec as lfcp
    from testkit.vm.lfcp_harness import KEY
    srv, bridge = bridged(peers, broker)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    w = broker.watch()
    try:
        s.sendto(lfcp.encode('cam7', 'HEARTBEAT', ('1',), 1, lfcp.Hmac(KEY)), ('127.0.0.1', srv.port))
        assert w.wait('lfcp/cam7/alarm', lambda p: p == b'armed_away')
        w.close()
        broker.restart()                    # no persistence: every retained message is gone
        w = broker.watch()
        assert w.wait('homeassistant/alarm_control_panel/lfcp_cam7/alarm/config', timeout=40)
        assert w.wait('lfcp/cam7/alarm') == b'armed_away'
        assert w.wait('lfcp/bridge/availability') == b'online'
    finally:
        w.close()
        s.close()
