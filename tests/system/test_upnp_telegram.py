"""/open and /close from Telegram chats, and the DDNS notices, with both fakes: Bot API and IGD.

The Telegram service and Exposure run together on the VM (tools/testkit/vm/upnp_driver.py), wired as in
the firmware: the chats' /open and /close run the 'open'/'close' commands, address changes go to
every allowed chat with send_message.
"""
import os
import re
import sys

import pytest
from peers import fake_telegram as ft  # noqa: E402
from peers.fake_igd import FakeIGD  # noqa: E402
from testkit.netns.driver import VM
from testkit.paths import ROOT

pytestmark = pytest.mark.timeout(120)
TOKEN = '123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw'
CHAT, CHAT2, FOREIGN = 42, -1001234, 666
URL = re.compile(r'http://(198\.51\.100\.\d+):(\d+)/stream\?key=([0-9a-f]{24})')


@pytest.fixture
def world(tmp_path):
    pki = ft.make_ca(str(tmp_path / 'pki'))
    tg = ft.FakeTelegram([TOKEN], pki['cert'], pki['key']).start()
    igd = FakeIGD().start()
    flash = tmp_path / 'flash'
    flash.mkdir()
    cfg = {'telegram': {'token': TOKEN, 'chat_ids': [CHAT, CHAT2], 'api_url': tg.url,
                        'ca_file': pki['ca_der'], 'poll_s': 1},
           'upnp': {'ssdp': '127.0.0.1:%d' % igd.ssdp_port, 'check_s': 10}}
    vm = VM(str(flash), cfg, lan='192.0.2.10/255.255.255.0', heap='512K')  # + TLS
    yield tg, igd, vm
    vm.close()
    igd.stop()
    tg.stop()


def texts(tg, chat):
    with tg.lock:
        return [m['text'] for m in tg.messages if m['chat_id'] == chat]


def test_open_ddns_and_close_from_a_chat(world):
    tg, igd, vm = world
    tg.add_update(CHAT, '/open')
    assert tg.wait(lambda: any(URL.search(t) for t in texts(tg, CHAT)), 30), vm.output()
    m = [URL.search(t) for t in texts(tg, CHAT) if URL.search(t)][0]
    assert m.group(1) == '198.51.100.7' and m.group(2) == '54321'
    assert igd.mapping(54321)['client'] == '192.0.2.10'
    assert not any(URL.search(t) for t in texts(tg, CHAT2))  # the reply goes to the asker only

    igd.external = '198.51.100.99'  # the ISP gives the router a new address
    new = 'Camera address changed: http://198.51.100.99:54321/stream?key=' + m.group(3)
    assert tg.wait(lambda: new in texts(tg, CHAT) and new in texts(tg, CHAT2), 40), vm.output()

    tg.add_update(CHAT2, '/close')
    assert tg.wait(lambda: 'Port closed' in texts(tg, CHAT2), 30), vm.output()
    assert igd.mapping(54321) is None


def test_foreign_chat_cannot_open_or_close(world):
    tg, igd, vm = world
    tg.add_update(FOREIGN, '/open')
    assert tg.wait(lambda: texts(tg, FOREIGN), 30), vm.output()
    assert texts(tg, FOREIGN) == ['not authorised']
    assert not any(c[0] == 'AddPortMapping' for c in igd.calls)
    assert not vm.call('status')['status']['open']

    assert vm.call('open')['ok']  # opened by the owner (admin page)
    tg.add_update(FOREIGN, '/close')
    tg.add_update(CHAT, '/status')  # a marker: once it is answered, /close was handled too
    assert tg.wait(lambda: texts(tg, CHAT), 30), vm.output()
    assert igd.mapping(54321) and vm.call('status')['status']['open']
    assert texts(tg, FOREIGN) == ['not authorised']  # told once, no URL, no close
