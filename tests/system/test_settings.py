"""Settings from the admin page: config.json's schema and checks, secrets write-only, atomic
writes, live where safe, export/import, confirmation before a lock-out."""
import json

from conftest import ADMIN

from firmware.config import schema

SECRET_VALUES = ('test-admin-pw', 'test-ap-pass', 'home-pass-1', 'lfcp-key-0123456789',
                 'update-key-0123456789ab')


def api(dev, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    code, _, out = dev.get('admin', path, auth=ADMIN, data=data,
                           headers={'Content-Type': 'application/json'} if data else {})
    return code, out.decode()


def on_flash(dev):
    return json.loads((dev.flash / 'config.json').read_text())


def start(firmware):
    return firmware({'lfcp': {'key': 'lfcp-key-0123456789'},
                     'update': {'key': 'update-key-0123456789ab'}})


def test_every_setting_is_shown_and_no_secret_leaves_the_device(firmware):
    dev = start(firmware)
    code, body = api(dev, '/settings')
    assert code == 200
    s = json.loads(body)['settings']
    for name, keys in schema.SCHEMA.items():       # every section and key of the schema
        assert set(s[name]) == set(keys), name
    assert s['camera']['quality']['value'] == 12 and s['camera']['quality']['rule'] == '10..63'
    assert s['admin']['password'] == {'type': 'str', 'default': '', 'rule': 'empty (off) or 8+ characters',
                                      'live': False, 'secret': True, 'set': True}
    assert s['telegram']['token']['set'] is False
    assert s['wifi']['upstream']['value'] == [{'ssid': 'home', 'password_set': True}]
    code, export = api(dev, '/settings/export')
    assert code == 200 and json.loads(export)['camera']['framesize'] == 'VGA'
    for secret in SECRET_VALUES:
        assert secret not in body and secret not in export, secret
    code, full = api(dev, '/settings/export?secrets=1')
    assert 'lfcp-key-0123456789' in full and 'home-pass-1' in full


def test_a_wrong_value_names_the_key_and_the_rule_and_changes_nothing(firmware):
    dev = start(firmware)
    before = (dev.flash / 'config.json').read_text()
    for change, text in (({'camera': {'quality': 5}}, 'camera.quality: must be 10..63, got 5'),
                         ({'camera': {'framesize': 'HUGE'}}, 'camera.framesize: must be one of'),
                         ({'admin': {'password': 'short'}}, 'admin.password: must be empty (off) or at least 8'),
                         ({'camera': {'qualty': 20}}, 'unknown key camera.qualty'),
                         ({'update': {'key': 'too-short'}}, 'update.key: must be empty (off) or at least 16')):
        code, body = api(dev, '/settings', change)
        assert code == 400 and text in body and 'nothing changed' in body, (change, body)
    assert (dev.flash / 'config.json').read_text() == before


def test_changes_are_written_applied_live_or_need_a_restart(firmware):
    dev = start(firmware)
    code, body = api(dev, '/settings', {'alarm': {'event_gap_s': 7}, 'camera': {'quality': 20}})
    assert code == 200, body
    r = json.loads(body)
    assert r['applied'] == ['alarm.event_gap_s'] and r['restart_needed'] == ['camera.quality']
    cfg = on_flash(dev)
    assert cfg['alarm']['event_gap_s'] == 7 and cfg['camera']['quality'] == 20
    assert cfg['admin']['password'] == ADMIN[1]       # untouched secrets stay
    s = json.loads(api(dev, '/settings')[1])
    assert s['settings']['camera']['quality']['value'] == 20 and s['restart_needed'] == ['camera.quality']
    # a new secret is stored, never echoed, and masked in the log
    code, body = api(dev, '/settings', {'telegram': {'token': '123456:new-token-value'}})
    assert code == 200 and 'new-token-value' not in body
    assert on_flash(dev)['telegram']['token'] == '123456:new-token-value'
    assert 'new-token-value' not in json.dumps(dev.status())
    # the upstream list without passwords keeps each known network's password
    code, body = api(dev, '/settings', {'wifi': {'upstream': [{'ssid': 'home'}, {'ssid': 'new', 'password': 'new-pass-22'}]}})
    assert code == 200, body
    assert on_flash(dev)['wifi']['upstream'] == [{'ssid': 'home', 'password': 'home-pass-1'},
                                                 {'ssid': 'new', 'password': 'new-pass-22'}]


def test_a_change_that_locks_the_owner_out_needs_confirmation(firmware):
    dev = start(firmware)
    assert dev.board.wait_for(lambda b: dev.status()['wifi']['state'] == 'connected', 20)
    code, body = api(dev, '/settings', {'admin': {'password': ''}})
    assert code == 409 and 'admin page off' in body
    code, body = api(dev, '/settings', {'wifi': {'upstream': []}})
    assert code == 409 and 'cuts the connection' in body
    assert on_flash(dev)['wifi']['upstream'][0]['ssid'] == 'home'
    code, body = api(dev, '/settings', {'wifi': {'upstream': []}, 'confirm': True})
    assert code == 200 and on_flash(dev)['wifi']['upstream'] == []


def test_export_then_import_restores_the_config_and_keeps_secrets(firmware):
    dev = start(firmware)
    export = json.loads(api(dev, '/settings/export')[1])
    api(dev, '/settings', {'camera': {'quality': 30}, 'device': {'name': 'renamed'}})
    code, body = api(dev, '/settings/import', export)
    assert code == 200, body
    cfg = on_flash(dev)
    assert cfg['camera'].get('quality', 12) == 12 and cfg['device']['name'] == 'testcam'
    assert cfg['admin']['password'] == ADMIN[1] and cfg['wifi']['upstream'][0]['password'] == 'home-pass-1'
    bad = dict(export, camera={'quality': 99})
    code, body = api(dev, '/settings/import', bad)
    assert code == 400 and 'camera.quality: must be 10..63, got 99' in body
