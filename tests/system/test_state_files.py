"""State files the firmware keeps on flash, edited by hand or cut short, are refused with a log
line and moved aside: the board boots, the feature starts fresh (issue 17, item 7)."""
import json
import time

import pytest

TOKEN = '123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw'


@pytest.mark.parametrize('content', ['[1]', '{"token": 12345, "chat_ids": [1]}',
                                     '{"token": "%s", "chat_ids": "many"}' % TOKEN, '{"tok'])
def test_a_broken_telegram_json_is_set_aside_and_the_board_boots(firmware, content):
    dev = firmware({'telegram': {'token': TOKEN, 'chat_ids': [42], 'poll_s': 0}},
                   files={'telegram.json': content})
    st = dev.status()
    assert st['telegram']['configured'] is True        # config.json's credentials are used
    assert (dev.flash / 'telegram.json.bad').read_text() == content
    assert not (dev.flash / 'telegram.json').exists()
    assert any('telegram.json unusable' in line for line in st['log'])
    assert TOKEN not in json.dumps(st)


@pytest.mark.parametrize('content', ['{"ports": "80"}', '[8080]', '{"ports": [99999]}', 'garbage'])
def test_a_broken_upnp_json_is_set_aside_and_said(firmware, content):
    dev = firmware(files={'upnp.json': content})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        st = dev.status()
        if any('upnp.json unusable' in line for line in st['log']):
            break
        time.sleep(0.2)
    assert any('upnp.json unusable' in line and 'check the router' in line for line in st['log'])
    assert (dev.flash / 'upnp.json.bad').read_text() == content
    assert dev.get('control', '/status')[0] == 200     # the servers are up
