"""The board's clock: it reads 2000-01-01 after a power-on (as a board's RTC does) until NTP sets
it; until then the status, log times and Telegram captions say "time not set", and verified TLS
is refused with an error naming the clock. NTP replies are validated; "gateway" in time.servers
is the router's address (127.0.0.1 in the simulator, so the fake server can stand in for it).
"""
import datetime
import json
import os
import re
import subprocess
import time

import pytest
from peers.fake_ntp import BAD, FORGED_YEAR, FakeNtp
from testkit.helpers import free_port
from testkit.paths import MICROPYTHON, ROOT
from testkit.peers import peers, wait  # noqa: F401  (peers is a fixture)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def ntp():
    srv = FakeNtp().start()
    yield srv
    srv.stop()


def synced(dev):
    return dev.status()['time'] != 'time not set'


def near_now(text, slack=5):
    """A status time ('2026-12-02 03:04:05 UTC') within `slack` seconds of this PC's clock."""
    t = datetime.datetime.strptime(text, '%Y-%m-%d %H:%M:%S UTC').replace(tzinfo=datetime.timezone.utc)
    return abs(t.timestamp() - time.time()) <= slack


def test_board_clock_starts_in_2000_and_says_time_not_set(firmware):
    dev = firmware({'time': {'servers': []}})
    st = dev.status()
    assert st['time'] == 'time not set' and st['time_source'] is None, st
    dev.wait_console('time: no NTP servers')
    # the log and the evidence carry no year-2000 times: no time at all until the clock is set
    code, _, body = dev.get('admin', '/log', auth=('admin', 'test-admin-pw'))
    assert code == 200
    lines = json.loads(body)
    assert lines and all(line[0] is None for line in lines), body[:300]


def test_ntp_sets_the_clock_within_seconds_of_uplink_and_uptime_does_not_jump(firmware, ntp):
    dev = firmware({'time': {'servers': [ntp.address]}},
                   air={'aps': [{'ssid': 'home', 'password': 'home-pass-1', 'up': False}]})
    t_before = time.monotonic()
    before = dev.status()
    assert before['time'] == 'time not set' and ntp.requests == 0, before   # no uplink, no NTP
    dev.board.control('air', aps=[{'ssid': 'home', 'password': 'home-pass-1', 'up': True}])
    wait(lambda: dev.status()['wifi']['state'] == 'connected', 30, 'the uplink')
    t0 = time.monotonic()
    wait(lambda: synced(dev), 15, 'the clock set by NTP')
    took = time.monotonic() - t0
    st = dev.status()
    elapsed = time.monotonic() - t_before
    assert near_now(st['time']), st['time']
    assert st['time_source'] == 'ntp ' + ntp.address and st['ntp']['set'], st
    assert took < 5, took     # one exchange once the uplink is up (the status poll is slower)
    # uptime counts on across the 26-year step of the clock
    up = st['uptime_s'] - before['uptime_s']
    assert elapsed - 2 <= up <= elapsed + 2, (before['uptime_s'], st['uptime_s'], elapsed)
    dev.wait_console('time: set from ' + ntp.address)


def test_forged_replies_are_ignored(firmware, ntp):
    ntp.bad = list(BAD)
    ntp.genuine = False
    dev = firmware({'time': {'servers': [ntp.address]}})
    wait(lambda: dev.status()['ntp']['last_error'], 15, 'the first NTP exchange to end')
    st = dev.status()
    assert st['time'] == 'time not set', st['time']     # none of them set the clock (to 2031)
    assert st['ntp']['ignored'] >= len(BAD) and 'no answer' in st['ntp']['last_error'], st['ntp']
    dev.wait_console('reply ignored')
    # forged replies first, then the genuine one: the genuine one sets the clock
    ntp.genuine = True
    wait(lambda: synced(dev), 30, 'the clock set by the genuine reply (after a retry)')
    st = dev.status()
    assert near_now(st['time']) and not st['time'].startswith(str(FORGED_YEAR)), st['time']


def test_gateway_is_the_fallback_when_the_server_is_dead(firmware, ntp):
    dead = free_port()     # nothing answers there
    dev = firmware({'time': {'servers': ['127.0.0.1:%d' % dead, 'gateway:%d' % ntp.port]}})
    wait(lambda: synced(dev), 15, 'the clock set through the gateway')
    st = dev.status()
    # the simulated station's gateway (ipconfig('gw4')) is 127.0.0.1, where the fake server is
    assert st['time_source'] == 'ntp gateway:%d' % ntp.port and ntp.answered, st
    assert near_now(st['time'])


def test_alarm_photo_waits_for_the_clock_then_captions_tell_the_truth(firmware, ntp, peers):
    tg = peers.telegram()
    ntp.silent = True
    dev = firmware(peers.config(telegram=tg, time={'servers': [ntp.address]}))
    wait(lambda: ntp.requests >= 1, 15, 'the first NTP request')
    assert dev.admin('alarm_test')[0] == 200
    # verified TLS with a clock in 2000: refused, naming the clock; the photo stays queued
    wait(lambda: 'clock not set' in (dev.status()['telegram'].get('last_error') or ''), 15,
         'the Telegram sender refusing TLS')
    err = dev.status()['telegram']['last_error']
    assert 'TLS refused: clock not set (waiting for NTP)' in err, err
    assert not tg.photos
    ntp.silent = False
    wait(lambda: tg.photos, 30, 'the queued alarm photo once the clock is set')
    first = tg.photos[0]['caption']
    assert 'time not set' in first and '2000-' not in first, first     # it happened before sync
    assert dev.admin('alarm_test')[0] == 200
    wait(lambda: len(tg.photos) >= 2, 15, 'the second alarm photo')
    second = tg.photos[1]['caption']
    day = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d')
    assert re.search(day + r' \d\d:\d\d:\d\d UTC', second), second
    # the alarm list of the status: 1970-based seconds once set, null before
    events = dev.status()['alarm']['events']
    assert events[0]['time'] is None and abs(events[-1]['time'] - time.time()) < 30, events


def test_the_rtc_keeps_time_through_a_reset_but_not_a_power_cut(firmware, ntp):
    dev = firmware({'time': {'servers': [ntp.address]}})
    wait(lambda: synced(dev), 15, 'the clock set by NTP')
    ntp.silent = True               # from now on only the RTC knows the time
    assert dev.admin('reboot')[0] == 200
    dev.board.wait_boots(2, 20)
    assert dev.board.wait_ready(list(dev.ports.values()), timeout=30)
    st = dev.status()
    assert st['boot']['reset_cause'] == 'hard reset' and near_now(st['time']), st
    assert st['time_source'] == 'rtc', st
    dev.board.power_cycle()
    dev.board.wait_boots(3, 20)
    assert dev.board.wait_ready(list(dev.ports.values()), timeout=30)
    st = dev.status()
    assert st['time'] == 'time not set' and st['time_source'] is None, st


PLACEHOLDERS = '''
import os, sys
sys.path.insert(0, sys.argv[2])
from sdcard_image import FileDev
os.mount(os.VfsFat(FileDev(sys.argv[1])), '/sd')
for d in ('/sd/clips', '/sd/clips/2000-01-01'):
    os.mkdir(d)
for s in range(180):
    with open('/sd/clips/2000-01-01/%02d%02d%02d-manual.avi' % (0, s // 60, s % 60), 'wb') as f:
        f.write(b'an earlier clip')
os.umount('/sd')
'''


def test_a_clip_never_overwrites_an_earlier_one_with_the_same_name(firmware, tmp_path):
    """Before NTP the board names clips by its RTC, which starts again at 2000-01-01 00:00:00
    after each power cut: the names of the first minutes come back (and two clips can start in
    one second). Every name of the first 3 minutes is taken here; the new clip gets another."""
    sim = tmp_path / 'flash' / '.sim'
    sim.mkdir(parents=True)
    vm = os.path.join(ROOT, 'tools', 'testkit', 'vm')
    subprocess.run([MICROPYTHON, os.path.join(vm, 'sdcard_image.py'), 'mkfs', str(sim / 'sdcard.img'), '8'],
                   check=True, timeout=60)
    subprocess.run([MICROPYTHON, '-c', PLACEHOLDERS, str(sim / 'sdcard.img'), vm], check=True, timeout=60)
    dev = firmware({'time': {'servers': []}, 'storage': {'sdcard': True}, 'camera': {'framesize': 'QVGA'},
                    'clips': {'fps': 5, 'pre_s': 1, 'post_s': 1, 'max_s': 5, 'reserve_mb': 1}})
    wait(lambda: dev.status()['clips'].get('ring_frames', 0) > 0, 20, 'the clip recorder running')
    code, _, body = dev.admin('record_start')
    assert code == 200 and b'clips/2000-01-01/00' in body and b'-manual-2.avi' in body, body
