"""firmware/telegram/bot.py on the real VM against the fake Bot API over HTTPS (tools/peers/fake_telegram.py).

Each test starts the fake (with a test CA made here) and tools/testkit/vm/telegram_driver.py, which runs
the Telegram service with a stub camera and takes orders over a loopback socket.
"""
import io
import json
import os
import sys
import time

import pytest
from peers import fake_telegram as ft  # noqa: E402
from PIL import Image
from testkit.paths import ROOT

pytestmark = pytest.mark.timeout(120)

TOKEN = '123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw'
TOKEN2 = '987654321:BBQx_kRLmnopqrstuvwxyz0123456789ab'
CHAT, OTHER_CHAT, FOREIGN = 42, -1001234, 666


@pytest.fixture(scope='module')
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp('pki')
    return {'good': ft.make_ca(str(d / 'good')), 'rogue': ft.make_ca(str(d / 'rogue'), 'rogue CA')}


@pytest.fixture(scope='module')
def jpeg():
    return ft.make_jpeg(20000)


@pytest.fixture
def fake(pki):
    f = ft.FakeTelegram([TOKEN, TOKEN2], pki['good']['cert'], pki['good']['key']).start()
    yield f
    f.stop()


@pytest.fixture
def run(tmp_path, fake, pki, jpeg):
    """run(**telegram_config) -> Driver; every driver is stopped at the end."""
    started = []

    def start(flash='flash', **tg):
        conf = {'token': TOKEN, 'chat_ids': [CHAT], 'api_url': fake.url,
                'ca_file': pki['good']['ca_der'], 'poll_s': 2}
        conf.update(tg)
        d = ft.Driver(str(tmp_path / flash), conf, jpeg)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


def photo_ok(p, jpeg=None):
    im = Image.open(io.BytesIO(p['jpeg']))
    im.load()
    assert im.format == 'JPEG'
    if jpeg is not None:
        assert p['jpeg'] == jpeg


def until(d, pred, timeout=20):
    """Poll the driver's Telegram status until pred(status) holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred(d.status()['status']):
            return True
        time.sleep(0.05)
    return False


def held_back(d, fake, n=1):
    """The first photo met a 429 and is back in the queue, waiting."""
    assert fake.wait(lambda: any(s == 429 for _, _, s in fake.calls)), d.output()
    assert until(d, lambda st: st['queued'] == n and st['sending'] is None), d.output()


def texts(fake, chat=None):
    with fake.lock:
        return [m['text'] for m in fake.messages if chat is None or m['chat_id'] == chat]


# --- photos on every trigger -------------------------------------------------------------------

def test_alarm_photo_is_a_valid_jpeg_with_caption(run, fake, jpeg):
    d = run()
    assert d.order(op='alarm', score=37)['ok']
    assert fake.wait(lambda: fake.photos), d.output()
    p = fake.photos[0]
    photo_ok(p, jpeg)
    assert p['chat_id'] == CHAT
    assert p['caption'].startswith('e32cam001 ')
    assert 'motion, score 37' in p['caption']
    assert time.strftime('%Y-%m-%d', time.gmtime()) in p['caption'] and 'UTC' in p['caption']
    assert not fake.bad_requests


def test_photo_on_request_test_and_chat_command(run, fake, jpeg):
    d = run(chat_ids=[CHAT, OTHER_CHAT])
    assert d.order(op='command', name='photo', args={'reason': 'request'})['text'] == 'photo queued'
    assert fake.wait(lambda: len(fake.photos) == 2), d.output()
    d.order(op='command', name='photo', args={'reason': 'test'})
    assert fake.wait(lambda: len(fake.photos) == 4), d.output()
    for p in fake.photos:
        photo_ok(p, jpeg)
    assert sorted(p['chat_id'] for p in fake.photos[:2]) == sorted([CHAT, OTHER_CHAT])
    assert all('photo on request' in p['caption'] for p in fake.photos[:2])
    assert all('test photo' in p['caption'] for p in fake.photos[2:4])
    # the second chat gets the uploaded photo by reference, not a second upload
    assert [p['by_reference'] for p in fake.photos] == [False, True, False, True]
    fake.add_update(OTHER_CHAT, '/photo')  # a chat's /photo goes to that chat only
    assert fake.wait(lambda: len(fake.photos) == 5), d.output()
    time.sleep(0.5)
    assert len(fake.photos) == 5 and fake.photos[4]['chat_id'] == OTHER_CHAT
    assert d.status()['taken'] == 3


def test_bad_photo_reason_and_unconfigured(run, fake):
    d = run(token='', chat_ids=[])
    r = d.order(op='command', name='photo', args={'reason': 'request'})
    assert not r['ok'] and 'not configured' in r['error']
    d2 = run(flash='flash2')
    r = d2.order(op='command', name='photo', args={'reason': 'selfie'})
    assert not r['ok'] and 'reason' in r['error']


def test_camera_off_answers_the_chat(run, fake):
    d = run()
    d.order(op='camera', on=False)
    fake.add_update(CHAT, '/photo')
    assert fake.wait(lambda: any('camera unavailable' in t for t in texts(fake, CHAT))), d.output()
    assert not fake.photos


# --- commands ----------------------------------------------------------------------------------

def test_commands_from_allowed_and_foreign_chats(run, fake):
    d = run()
    assert fake.wait(lambda: fake.menus), d.output()
    names = [c['command'] for c in fake.menus[0]]
    assert {'photo', 'arm', 'disarm', 'status', 'reboot', 'help'} <= set(names)
    fake.add_update(FOREIGN, '/arm')
    fake.add_update(FOREIGN, '/disarm')
    fake.add_update(CHAT, '/arm')
    assert fake.wait(lambda: 'armed' in texts(fake, CHAT)), d.output()
    assert d.status()['state']['armed'] is True
    fake.add_update(CHAT, '/status')
    fake.add_update(CHAT, '/open')
    fake.add_update(CHAT, '/close@fake_bot')
    fake.add_update(CHAT, '/help')
    fake.add_update(CHAT, '/frobnicate')
    fake.add_update(CHAT, 'hello')
    assert fake.wait(lambda: len(texts(fake, CHAT)) == 7), (texts(fake), d.output())
    got = texts(fake, CHAT)
    assert got[1] == 'armed'  # /status answers through the command layer
    assert got[2] == '/open: not available' and got[3] == '/close: not available'
    assert '/photo' in got[4] and '/reboot' in got[4]
    assert 'unknown command' in got[5] and got[6] == 'commands: /help'
    # the foreign chat: one answer for two attempts, logged, no effect
    assert texts(fake, FOREIGN) == ['not authorised']
    st = d.status()
    assert st['status']['refused'] == 2
    assert sum('chat 666 refused' in line for line in st['log']) == 2


def test_offsets_confirm_each_update_exactly_once(run, fake):
    d = run()
    fake.wait(lambda: fake.offsets)
    ids = [fake.add_update(CHAT, '/status') for _ in range(3)]
    fake.fail('getUpdates', '502')
    ids += [fake.add_update(CHAT, '/status') for _ in range(12)]  # more than one batch (limit 10)
    assert fake.wait(lambda: len(texts(fake, CHAT)) == 15, 40), d.output()
    assert fake.wait(lambda: fake.offsets[-1] == ids[-1] + 1)
    time.sleep(2.5)  # another poll round: nothing comes twice
    assert len(texts(fake, CHAT)) == 15
    assert d.status()['status']['commands'] == 15
    offs = [o for o in fake.offsets if o]
    assert offs == sorted(offs), 'offsets never go back'
    assert not fake.updates


def test_reboot_confirms_its_update_first(run, fake, tmp_path):
    d = run()
    uid = fake.add_update(CHAT, '/reboot')
    # the driver's reboot stops the bot 0.3 s later, as the board's reset would
    assert fake.wait(lambda: d.status()['state']['reboots'] == 1), d.output()
    time.sleep(1)
    assert uid + 1 in fake.offsets  # confirmed before the reset
    assert texts(fake, CHAT) == ['e32cam001: rebooting']
    d.stop()
    d2 = run()  # the board after the reset: the /reboot does not come back
    assert fake.wait(lambda: fake.offsets.count(0) >= 2)
    time.sleep(2.5)
    assert d2.status()['state']['reboots'] == 0


# --- reliability -------------------------------------------------------------------------------

def test_429_waits_retry_after(run, fake, jpeg):
    d = run()
    fake.wait(lambda: fake.menus)
    fake.fail('sendPhoto', '429', retry_after=3)
    d.order(op='alarm', score=5)
    assert fake.wait(lambda: fake.photos, 30), d.output()
    sends = [(t, s) for t, m, s in fake.calls if m == 'sendPhoto']
    assert [s for _, s in sends] == [429, 200]
    assert sends[1][0] - sends[0][0] >= 2.9  # never before retry_after
    photo_ok(fake.photos[0], jpeg)
    assert d.status()['status']['retries'] == 1


def test_502_reset_and_hang_recovered_nothing_lost(run, fake, jpeg):
    d = run()
    d.order(op='timeouts', timeouts={'photo': 2, 'message': 2})
    fake.fail('sendPhoto', '502')
    fake.fail('sendPhoto', 'reset')
    fake.fail('sendPhoto', 'hang', delay=4)
    fake.fail('sendPhoto', 'slow', delay=1)  # slower than usual, within the timeout: accepted
    for score in (1, 2, 3):
        d.order(op='alarm', score=score)
    assert fake.wait(lambda: len(fake.photos) == 3, 60), d.output()
    time.sleep(1)
    assert len(fake.photos) == 3
    assert [p['caption'].split('score ')[1] for p in fake.photos] == ['1', '2', '3']
    for p in fake.photos:
        photo_ok(p, jpeg)
    kinds = [s for _, m, s in fake.calls if m == 'sendPhoto']
    assert kinds[:3] == [502, 'reset', 'hang']
    st = d.status()['status']
    assert st['retries'] == 3 and st['sent'] == 3 and st['queued'] == 0
    log = '\n'.join(d.status()['log'])
    assert 'timed out' in log and '502' in log


def test_backoff_is_exponential(run, fake):
    d = run(poll_s=0)
    fake.fail('sendMessage', '502', count=4)
    d.order(op='camera', on=False)
    # the photo cannot be taken: the chat is told so, and that message meets four 502s
    d.order(op='command', name='photo', args={'reason': 'request'})
    assert fake.wait(lambda: texts(fake), 40), d.output()
    t = [c[0] for c in fake.calls if c[1] == 'sendMessage']
    gaps = [b - a for a, b in zip(t, t[1:])]
    assert len(gaps) == 4
    assert gaps[1] >= 1.8 and gaps[2] >= 3.5 and gaps[3] >= 7  # 1, 2, 4, 8 s


def test_queue_bound_drops_oldest_requested_photo(run, fake):
    d = run(queue=3, alarm_slots=2, poll_s=0)
    fake.fail('sendPhoto', '429', retry_after=4)
    d.order(op='alarm', score=0)  # A0: in flight, meets the 429, back in the queue
    held_back(d, fake)
    d.order(op='command', name='photo', args={'reason': 'request'})  # R1
    d.order(op='command', name='photo', args={'reason': 'test'})     # R2: queue full now
    d.order(op='alarm', score=1)  # drops R1 (oldest requested)
    d.order(op='alarm', score=2)  # drops R2
    r = d.order(op='command', name='photo', args={'reason': 'request'})  # only alarms: refused
    assert 'dropped' in r['text']
    st = d.status()['status']
    assert st['queued'] == 3 and st['queued_alarms'] == 3 and st['dropped'] == 3
    d.order(op='alarm', score=3)  # 3 alarms pending >= alarm_slots: the oldest alarm goes
    assert fake.wait(lambda: len(fake.photos) == 3, 30), d.output()
    time.sleep(1)
    assert [p['caption'].split('score ')[1] for p in fake.photos] == ['1', '2', '3']
    log = '\n'.join(d.status()['log'])
    assert log.count('dropped a requested photo') == 3 and log.count('dropped a alarm photo') == 1


def test_alarm_slots_stretch_the_bound(run, fake):
    d = run(queue=1, alarm_slots=3, poll_s=0)
    fake.fail('sendPhoto', '429', retry_after=3)
    d.order(op='alarm', score=0)
    held_back(d, fake)
    for score in (1, 2):
        d.order(op='alarm', score=score)
    assert d.status()['status']['queued_alarms'] == 3  # over queue=1: fewer than 3 pending
    d.order(op='alarm', score=3)  # now 3 pending: the oldest goes
    assert fake.wait(lambda: len(fake.photos) == 3, 30), d.output()
    assert [p['caption'].split('score ')[1] for p in fake.photos] == ['1', '2', '3']


def test_alarm_photos_go_before_requested(run, fake):
    d = run(queue=8, poll_s=0)
    fake.fail('sendPhoto', '429', retry_after=2)
    d.order(op='command', name='photo', args={'reason': 'request'})
    held_back(d, fake)
    d.order(op='command', name='photo', args={'reason': 'test'})
    d.order(op='alarm', score=9)
    assert fake.wait(lambda: len(fake.photos) == 3, 30), d.output()
    caps = [p['caption'] for p in fake.photos]
    assert 'score 9' in caps[0] and 'on request' in caps[1] and 'test photo' in caps[2]


# --- credentials -------------------------------------------------------------------------------

def test_credentials_change_at_once_and_persist(run, fake, tmp_path, pki):
    d = run(token='', chat_ids=[], poll_s=5)
    time.sleep(1)
    assert not fake.calls  # no token: no polling
    r = d.order(op='command', name='telegram_set', args={'token': TOKEN, 'chat_id': str(CHAT)})
    assert r['ok'], r
    saved = json.loads((tmp_path / 'flash' / 'telegram.json').read_text())
    assert saved == {'token': TOKEN, 'chat_ids': [CHAT]}
    assert not (tmp_path / 'flash' / 'telegram.json.tmp').exists()
    assert fake.wait(lambda: fake.menus and fake.offsets), d.output()
    fake.add_update(CHAT, '/arm')
    assert fake.wait(lambda: 'armed' in texts(fake)), d.output()
    # a new token ends the long poll in flight: the next poll uses it well before poll_s ends
    fake.tokens = {TOKEN2}
    time.sleep(0.5)
    n = len(fake.offsets)
    t0 = time.monotonic()
    r = d.order(op='command', name='telegram_set', args={'token': TOKEN2, 'chat_id': CHAT})
    assert r['ok']
    assert fake.wait(lambda: len(fake.menus) == 2 and len(fake.offsets) > n, 10), d.output()
    assert time.monotonic() - t0 < 4.5
    fake.add_update(CHAT, '/disarm')
    assert fake.wait(lambda: 'disarmed' in texts(fake)), d.output()
    # telegram.json overrides config.json at boot
    d.stop()
    d2 = ft.Driver(str(tmp_path / 'flash'), {'token': TOKEN, 'chat_ids': [1], 'api_url': fake.url,
                                              'ca_file': pki['good']['ca_der'], 'poll_s': 2}, ft.make_jpeg(5000))
    try:
        d2.order(op='alarm', score=7)
        assert fake.wait(lambda: fake.photos), d2.output()
        assert fake.photos[0]['chat_id'] == CHAT
    finally:
        d2.stop()


def test_bad_credentials_are_refused_without_echo(run, fake):
    d = run()
    bad = '12345:short'
    r = d.order(op='command', name='telegram_set', args={'token': bad, 'chat_id': CHAT})
    assert not r['ok'] and 'BotFather' in r['error'] and bad not in r['error']
    r = d.order(op='command', name='telegram_set', args={'token': TOKEN, 'chat_id': 'me'})
    assert not r['ok'] and 'chat_id' in r['error']
    assert bad not in d.output()


def test_token_never_appears(run, fake, tmp_path):
    d = run()
    fake.add_update(CHAT, '/status')
    fake.fail('sendMessage', '502')
    fake.fail('getUpdates', 'reset')
    assert fake.wait(lambda: texts(fake), 30), d.output()
    # a token the API refuses: 401, logged and shown in status, still without the token
    fake.tokens = {TOKEN2}
    d.order(op='alarm', score=1)
    assert fake.wait(lambda: d.status()['status']['auth_failed'], 30)
    # and an API that is not there at all
    d.order(op='command', name='telegram_set', args={'token': TOKEN2, 'chat_id': CHAT})
    dead = run(flash='dead', api_url='https://127.0.0.1:%d' % ft.free_port())
    dead.order(op='alarm', score=1)
    time.sleep(2)
    for drv in (d, dead):
        st = drv.status()
        blob = drv.output() + json.dumps(st)
        for secret in (TOKEN, TOKEN.split(':')[1], TOKEN2, TOKEN2.split(':')[1]):
            assert secret not in blob
    assert '401' in json.dumps(d.status())
    assert 'refused' in dead.status()['status']['last_error']


# --- TLS ---------------------------------------------------------------------------------------

def test_certificate_from_unknown_ca_is_refused(run, fake, pki):
    d = run(ca_file=pki['rogue']['ca_pem'])  # PEM works as well as DER
    d.order(op='alarm', score=1)
    assert fake.wait(lambda: fake.tls_failures >= 1), d.output()
    time.sleep(1)
    assert not fake.photos and not fake.calls
    assert 'TLS' in d.status()['status']['last_error']
    # the shipped roots (no ca_file) do not trust the test CA either
    d2 = run(flash='flash2', ca_file='')
    d2.order(op='alarm', score=1)
    assert fake.wait(lambda: fake.tls_failures >= 2), d2.output()
    time.sleep(1)
    assert not fake.photos
    assert 'not correctly signed' in d2.status()['status']['last_error']


def test_missing_ca_file_is_reported(run, fake):
    d = run(ca_file='nope.pem')
    st = d.status()['status']
    assert 'nope.pem' in st['tls_error']
    d.order(op='alarm', score=1)
    time.sleep(1)
    assert not fake.calls


# --- the stream is not stalled by uploads --------------------------------------------------------

def test_the_stream_is_not_stalled_while_uploads_wait_for_telegram(run, fake, jpeg):
    """Six 60 KB photos, each answered 1.5 s after its upload: a sender that blocked the loop
    on the socket would stop the stream for 1.5 s six times; the stream's worst gap is bounded
    far below that, whatever the machine's load, and it kept ticking through every upload."""
    big = ft.make_jpeg(60000)
    d = run(poll_s=0, queue=8)
    with open(os.path.join(d.flash, 'photo.jpg'), 'wb') as f:
        f.write(big)
    time.sleep(0.5)
    fake.fail('sendPhoto', 'slow', count=6, delay=1.5)
    d.order(op='tick', reset=True)
    for _ in range(6):
        d.order(op='command', name='photo', args={'reason': 'request'})
    assert fake.wait(lambda: len(fake.photos) == 6, 60), d.output()
    busy = d.order(op='tick', reset=True)
    print('during uploads: %d ticks in %d ms, %.1f fps, worst gap %d ms'
          % (busy['frames'], busy['ms'], busy['fps'], busy['max_gap_ms']))
    assert busy['ms'] >= 6 * 1500, busy
    assert busy['max_gap_ms'] < 1000, busy
    assert busy['frames'] * 1000 >= busy['ms'], busy  # at least one tick a second all along
