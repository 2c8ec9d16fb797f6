"""The whole firmware against a real Mosquitto (password file, ACL): Home Assistant discovery,
commands from MQTT through the command layer, state on change, broker restart and uplink loss,
wrong credentials and bad payloads.

The discovery payloads are checked against Home Assistant's documented schema (testkit/ha_schema.py).
"""
import json
import time

import pytest
from testkit.broker import USERS, Broker
from testkit.ha_schema import ALARM_STATES, check_discovery

BASE = 'esp32cam/testcam'
PREFIX = 'homeassistant'

EXPECTED = {('alarm_control_panel', 'alarm'), ('binary_sensor', 'motion'), ('camera', 'photo'),
            ('sensor', 'rssi'), ('sensor', 'ssid'), ('sensor', 'heap_free'), ('sensor', 'uptime'),
            ('sensor', 'last_alarm'), ('button', 'take_photo'), ('button', 'alarm_test'),
            ('switch', 'camera')}


def test_discovery_check_catches_a_missing_required_key():
    conf = {'name': 'x', 'unique_id': 'u', 'availability_topic': 'a', 'device': {'identifiers': ['i']},
            'state_topic': 's'}
    assert check_discovery('alarm_control_panel', conf) == [
        'alarm_control_panel: required key command_topic missing']
    assert check_discovery('switch', dict(conf, command_topic='c', bogus=1)) == [
        'switch: key bogus is not documented']


def mqtt_cfg(broker, **extra):
    cfg = {'host': '127.0.0.1', 'port': broker.port, 'user': 'cam', 'password': USERS['cam'],
           'keepalive_s': 10, 'timeout_s': 5}
    cfg.update(extra)
    return {'mqtt': cfg}


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / 'broker').start()
    yield b
    b.stop()


@pytest.fixture
def watch(broker):
    w = broker.watch()
    yield w
    w.close()


def configs(watch):
    out = {}
    for topic, payload in list(watch.last.items()):
        parts = topic.split('/')
        if parts[0] == PREFIX and parts[-1] == 'config' and parts[2] == 'testcam' and payload:
            out[(parts[1], parts[3])] = json.loads(payload)
    return out


def wait_configs(watch, expected, dev, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = configs(watch)
        if expected <= set(got):
            return got
        time.sleep(0.1)
    raise AssertionError('entities missing: %s\n%s' % (sorted(expected - set(configs(watch))),
                                                       dev.console()[-3000:]))


def result(watch, since, timeout=15):
    return json.loads(watch.wait(BASE + '/result', timeout=timeout, since=since))


def test_device_appears_with_every_entity(firmware, broker, watch):
    dev = firmware(mqtt_cfg(broker, allow_destructive=True))
    got = wait_configs(watch, EXPECTED | {('button', 'reboot')}, dev)
    assert ('sensor', 'clips') not in got      # no card configured: no clip count
    for (component, oid), conf in got.items():
        assert check_discovery(component, conf) == [], (component, oid, conf)
    dev_info = got[('alarm_control_panel', 'alarm')]['device']
    assert dev_info['model'] and dev_info['sw_version']
    assert dev_info['configuration_url'].startswith('http://')
    assert str(dev.ports['admin']) in dev_info['configuration_url']
    assert len({json.dumps(c['device'], sort_keys=True) for c in got.values()}) == 1  # one device
    assert len({c['unique_id'] for c in got.values()}) == len(got)
    # availability and the states, retained
    assert watch.wait(BASE + '/availability', lambda p: p == b'online')
    assert watch.wait(BASE + '/alarm').decode() in ALARM_STATES
    assert watch.wait(BASE + '/motion') == b'OFF'
    assert watch.wait(BASE + '/camera') in (b'ON', b'OFF')
    vit = json.loads(watch.wait(BASE + '/vitals'))
    assert vit['ssid'] == 'home' and isinstance(vit['heap_free'], int) and vit['rssi'] < 0
    assert '"password"' not in dev.console() and USERS['cam'] not in dev.console()
    s = dev.status()['mqtt']
    assert s['connected'] and s['announced'] and 'error' not in s
    # allow_destructive: the reboot button reboots; the last will says offline, then online again
    m = watch.mark()
    watch.publish(BASE + '/reboot/press', 'PRESS')
    assert result(watch, m) == {'topic': 'reboot/press', 'ok': True, 'result': 'rebooting'}
    assert dev.board.wait_boots(2, timeout=30)
    watch.wait(BASE + '/availability', lambda p: p == b'offline', since=m, timeout=30)
    watch.wait(BASE + '/availability', lambda p: p == b'online', since=m, timeout=30)


def test_arming_from_mqtt_and_the_owners_disarm(firmware, broker, watch):
    dev = firmware(mqtt_cfg(broker))
    watch.wait(BASE + '/alarm', lambda p: p == b'disarmed')
    m = watch.mark()
    watch.publish(BASE + '/alarm/set', 'ARM_AWAY')
    assert result(watch, m) == {'topic': 'alarm/set', 'ok': True, 'result': 'alarm armed'}
    watch.wait(BASE + '/alarm', lambda p: p == b'armed_away', since=m)
    assert dev.status()['alarm']['state'] == 'armed'
    # the owner disarms on the admin page: the state on the broker follows, and it stays
    m = watch.mark()
    code, _, _ = dev.admin('disarm')
    assert code in (200, 303)
    watch.wait(BASE + '/alarm', lambda p: p == b'disarmed', since=m)
    st = dev.status()['alarm']
    assert st['state'] == 'disarmed' and st['commanded'] == 'disarmed'
    # the reboot button is not offered (allow_destructive defaults to false) and is refused
    assert ('button', 'reboot') not in configs(watch)
    m = watch.mark()
    watch.publish(BASE + '/reboot/press', 'PRESS')
    r = result(watch, m)
    assert r['ok'] is False and 'allow_destructive' in r['error']
    assert dev.board.running and dev.status()['boot']


def test_bad_payloads_get_clear_errors(firmware, broker, watch):
    dev = firmware(mqtt_cfg(broker))
    watch.wait(BASE + '/availability', lambda p: p == b'online')
    cases = [('alarm/set', b'ARM_NIGHT', 'payload must be ARM_AWAY or DISARM'),
             ('alarm/set', b'\xff\xfe', 'payload must be ARM_AWAY or DISARM'),
             ('camera/set', b'maybe', 'payload must be ON or OFF'),
             ('alarm_test/press', b'x' * 3000, None)]
    for what, payload, err in cases:
        m = watch.mark()
        watch.publish(BASE + '/' + what, payload)
        if err is None:       # bigger than any command: dropped, counted, the session goes on
            deadline = time.monotonic() + 10
            while dev.status()['mqtt']['dropped'] < 1:
                assert time.monotonic() < deadline, 'oversized message not counted'
                time.sleep(0.1)
            continue
        r = result(watch, m)
        assert r['ok'] is False and err in r['error'] and r['topic'] == what, r
    m = watch.mark()
    watch.publish(BASE + '/alarm/set', 'ARM_AWAY')
    assert result(watch, m)['ok'] is True
    s = dev.status()
    assert s['mqtt']['connected'] and s['tasks']['mqtt']['restarts'] == 0
    assert s['tasks']['mqtt-commands']['restarts'] == 0


def test_wrong_credentials_are_named(firmware, broker):
    dev = firmware(mqtt_cfg(broker, password='not-the-password'))
    deadline = time.monotonic() + 20
    while 'error' not in dev.status()['mqtt']:
        assert time.monotonic() < deadline, 'no error for wrong credentials'
        time.sleep(0.2)
    s = dev.status()['mqtt']
    assert 'broker refused the connection' in s['error'] and not s['connected']
    assert 'password' in s['error']
    assert 'not-the-password' not in json.dumps(dev.status())
    assert dev.wait_console(s['error'])


def test_motion_turns_the_sensor_on_and_sends_the_photo(firmware, broker, watch):
    dev = firmware(mqtt_cfg(broker, motion_hold_s=2))
    watch.wait(BASE + '/motion', lambda p: p == b'OFF')
    m = watch.mark()
    watch.publish(BASE + '/alarm/set', 'ARM_AWAY')
    watch.wait(BASE + '/alarm', lambda p: p == b'armed_away', since=m)
    m = watch.mark()
    dev.board.control('camera', motion=True)
    watch.wait(BASE + '/motion', lambda p: p == b'ON', since=m)
    score = json.loads(watch.wait(BASE + '/motion/attributes', lambda p: json.loads(p)['score'] > 0,
                                  since=m))['score']
    watch.wait(BASE + '/alarm', lambda p: p == b'triggered', since=m)
    photo = watch.wait(BASE + '/photo', since=m)
    assert photo[:2] == b'\xff\xd8' and photo[-2:] == b'\xff\xd9' and len(photo) > 5000
    assert watch.wait(BASE + '/last_alarm', since=m).decode()[4] == '-'
    dev.board.control('camera', motion=False)
    m = watch.mark()
    watch.wait(BASE + '/motion', lambda p: p == b'OFF', since=m)       # after motion_hold_s
    watch.wait(BASE + '/alarm', lambda p: p == b'armed_away', since=m)
    assert score > 0
    # the photo button: a fresh snapshot on the camera entity
    m = watch.mark()
    watch.publish(BASE + '/photo/take', 'PRESS')
    assert watch.wait(BASE + '/photo', since=m)[:2] == b'\xff\xd8'
    assert result(watch, m)['ok'] is True


def test_broker_restart_and_uplink_loss_keep_the_state(firmware, broker, watch):
    dev = firmware(mqtt_cfg(broker, keepalive_s=5))
    watch.wait(BASE + '/availability', lambda p: p == b'online')
    m = watch.mark()
    watch.publish(BASE + '/alarm/set', 'ARM_AWAY')
    watch.wait(BASE + '/alarm', lambda p: p == b'armed_away', since=m)
    watch.close()
    broker.restart()                        # no persistence: the broker forgot every retained message
    w = broker.watch()
    try:
        assert w.wait(BASE + '/alarm', lambda p: p == b'armed_away', timeout=30)
        assert w.wait(BASE + '/availability') == b'online'
        wait_configs(w, EXPECTED, dev)
        # uplink loss: the device drops the session; the broker's last will says offline
        m = w.mark()
        dev.board.control('air', aps=[])
        assert w.wait(BASE + '/availability', lambda p: p == b'offline', since=m, timeout=30)
        # meanwhile the owner disarms on the admin page (AP side): the broker learns it on return
        assert dev.admin('disarm')[0] in (200, 303)
        m = w.mark()
        dev.board.control('air', aps=[{'ssid': 'home', 'password': 'home-pass-1'}])
        assert w.wait(BASE + '/availability', lambda p: p == b'online', since=m, timeout=40)
        assert w.wait(BASE + '/alarm', lambda p: p == b'disarmed', since=m)
        time.sleep(0.5)
        assert w.last[BASE + '/alarm'] == b'disarmed'
        s = dev.status()['mqtt']
        assert s['connected'] and s['connects'] >= 3
    finally:
        w.close()


def test_removing_the_section_removes_the_entities(firmware, broker, watch):
    dev = firmware(mqtt_cfg(broker))
    wait_configs(watch, EXPECTED, dev)
    dev.board.stop()
    cfg = json.loads((dev.flash / 'config.json').read_text())
    del cfg['mqtt']
    (dev.flash / 'config.json').write_text(json.dumps(cfg))
    m = watch.mark()
    dev.board.start()
    deadline = time.monotonic() + 30
    while configs(watch):
        assert time.monotonic() < deadline, 'entities left: %s\n%s' % (
            sorted(configs(watch)), dev.console()[-2000:])
        time.sleep(0.1)
    assert watch.mark() > m
    wait_file_gone = time.monotonic() + 10
    while (dev.flash / 'mqtt.json').exists():
        assert time.monotonic() < wait_file_gone, 'mqtt.json kept'
        time.sleep(0.1)
    # next boot: nothing of MQTT is loaded
    dev.board.stop()
    dev.board.start()
    assert dev.board.wait_ready(list(dev.ports.values()), timeout=30)
    assert dev.status()['mqtt'] == {'configured': False}
    assert 'mqtt' not in dev.status()['tasks']


def test_tls_with_a_verified_broker_certificate(firmware, tmp_path):
    from peers.fake_telegram import make_ca
    pki = make_ca(str(tmp_path / 'pki'), name='broker test CA')
    other = make_ca(str(tmp_path / 'other'), name='some other CA')
    b = Broker(tmp_path / 'tls-broker', tls=pki).start()
    w = b.watch()
    try:
        dev = firmware(mqtt_cfg(b, port=b.tls_port, tls_ca=pki['ca_der']))
        wait_configs(w, EXPECTED, dev)
        assert dev.status()['mqtt']['connected']
        # a broker whose certificate the configured CA did not sign: refused, and said so
        bad = firmware(mqtt_cfg(b, port=b.tls_port, tls_ca=other['ca_der']), name='flash2')
        deadline = time.monotonic() + 20
        while 'error' not in bad.status()['mqtt']:
            assert time.monotonic() < deadline, bad.status()['mqtt']
            time.sleep(0.2)
        s = bad.status()['mqtt']
        assert not s['connected'] and 'TLS' in s['error'], s
    finally:
        w.close()
        b.stop()


def test_a_silent_broker_is_noticed_by_the_keepalive(firmware, broker, watch):
    import signal
    dev = firmware(mqtt_cfg(broker, keepalive_s=5))
    watch.wait(BASE + '/availability', lambda p: p == b'online')
    broker.proc.send_signal(signal.SIGSTOP)      # the TCP session stays open, nothing answers
    try:
        deadline = time.monotonic() + 30
        while dev.status()['mqtt']['connected']:
            assert time.monotonic() < deadline, 'a silent broker not noticed'
            time.sleep(0.2)
        err = dev.status()['mqtt'].get('error', '')
        assert err.startswith('127.0.0.1:%d: the broker ' % broker.port), err
        assert 'silent' in err or 'did not a' in err, err
    finally:
        broker.proc.send_signal(signal.SIGCONT)
    deadline = time.monotonic() + 40
    while not dev.status()['mqtt']['connected']:
        assert time.monotonic() < deadline, dev.status()['mqtt']
        time.sleep(0.2)


def test_a_board_with_a_card_announces_its_clip_count(firmware, broker, watch):
    """The clip count, where clips can exist: a board with the card on (here with no card in the
    slot yet) announces a 'Clips recorded' sensor; the default board (card off) has none."""
    dev = firmware(dict(mqtt_cfg(broker), storage={'sdcard': True}))
    got = wait_configs(watch, EXPECTED | {('sensor', 'clips')}, dev)
    assert check_discovery('sensor', got[('sensor', 'clips')]) == []
    assert json.loads(watch.wait(BASE + '/vitals'))['clips'] == 0
    assert dev.status()['card']['state'] in ('none', 'starting', 'error')
