"""The alarm end to end: the whole firmware on the MicroPython VM with the simulated camera, the
reference LFCP server, the fake Telegram Bot API and a stand-in for the Internet.

The simulator's scene (docs/simulator.md) is still, or shows a person crossing the room
(camera.json motion=true), or a folder of frames rendered here. Every wait is bounded and polls.
"""
import io
import json
import re
import socket
import threading
import time

import pytest
from PIL import Image
from testkit.helpers import MjpegReader
from testkit.peers import CHAT, alarm, closed_port, frames_after, peers, wait  # noqa: F401  (peers is a fixture)

pytestmark = pytest.mark.timeout(60)
NAME = 'testcam'
GAP = 3


def jpeg(data):
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


# --- (1) motion -> an alarm at every notifier, once per event gap ------------------------------

def test_motion_alarm_reaches_every_notifier_once_per_gap(firmware, peers):
    srv = peers.lfcp()
    tg = peers.telegram()
    dev = firmware(peers.config(servers=[srv], telegram=tg, alarm={'event_gap_s': GAP}))
    wait(lambda: peers.reachable(srv, NAME), 15, 'heartbeats at the LFCP server')

    assert dev.admin('arm')[0] == 200
    a = frames_after(dev, 10)                               # still scene: ~2 s at 5 fps
    assert a['state'] == 'armed' and a['alarms'] == 0, a

    t0 = time.monotonic()
    dev.board.control('camera', motion=True)
    wait(lambda: peers.moal(srv, NAME), 15, 'a MOAL at the server')
    t_moal = time.monotonic() - t0
    wait(lambda: tg.photos, 15, 'a photo at the fake Telegram')
    t_photo = time.monotonic() - t0

    # about 10 s of motion: one alarm per event gap, never more
    time.sleep(max(0.0, 10 - (time.monotonic() - t0)))
    dev.board.control('camera', motion=False)
    time.sleep(1)                                           # the last moving frames drain
    t_end = time.monotonic() - t0
    a = alarm(dev)
    n = a['alarms']
    assert 3 <= n <= t_end // GAP + 1, (n, t_end, a)        # again after each gap, never sooner
    motion = [e for e in a['events'] if e['reason'] == 'motion']
    assert len(motion) == min(n, 5)
    for e1, e2 in zip(motion, motion[1:]):
        assert e2['time'] - e1['time'] >= GAP - 0.05, motion    # device clock, same VM
    assert all(e['score'] > 0 for e in motion)

    # every notifier got each alarm exactly once
    wait(lambda: len(peers.moal(srv, NAME)) == n, 15, '%d MOALs' % n)
    moal = peers.moal(srv, NAME)
    assert all(m['text'] == 'esp32_cam_motion_detected' for m in moal)
    assert len(set(m['id'] for m in moal)) == n
    wait(lambda: len(tg.photos) >= n, 30, '%d photos' % n)
    time.sleep(0.5)
    photos = [p for p in tg.photos]
    assert len(photos) == n, [p['caption'] for p in photos]
    scores = [e['score'] for e in motion]
    for p in photos:
        assert p['chat_id'] == CHAT
        im = jpeg(p['jpeg'])
        assert im.format == 'JPEG' and im.size == (640, 480)
        m = re.search(r'^%s .*: motion, score (\d+)$' % NAME, p['caption'])
        assert m, p['caption']
    assert [int(re.search(r'score (\d+)$', p['caption']).group(1)) for p in photos][-len(scores):] \
        == scores
    # the log line, on the device and at the management server
    assert dev.console().count('W ALARM motion score') == n
    wait(lambda: len([t for t in peers.logs(srv, NAME) if t.startswith('W_ALARM_motion_score_')])
         == n, 10, 'the ALARM LOG lines at the server')

    # the scene is still again: no alarm, once the event gap can no longer hide one
    time.sleep(GAP)
    base = alarm(dev)['alarms']
    a = frames_after(dev, 10)
    assert a['alarms'] == base, a

    # disarmed: motion raises nothing, and the detector does not even look
    assert dev.admin('disarm')[0] == 200
    dev.board.control('camera', motion=True)
    time.sleep(0.5)                                         # a frame in flight may still be read
    checked = alarm(dev)['frames_checked']
    time.sleep(2)
    a = alarm(dev)
    assert a['state'] == 'disarmed' and a['alarms'] == base and a['frames_checked'] == checked, a
    assert len(peers.moal(srv, NAME)) == n and len(tg.photos) == n
    print('motion -> MOAL %.2f s, -> photo %.2f s, %d alarms in %.1f s' % (t_moal, t_photo, n, t_end))


# --- (2) the armed state survives a restart ------------------------------------------------------

def test_armed_state_survives_a_reboot_and_detection_resumes(firmware):
    dev = firmware({'alarm': {'event_gap_s': GAP}})
    assert dev.admin('arm')[0] == 200
    frames_after(dev, 3)
    assert json.loads((dev.flash / 'alarm.json').read_text())['state'] == 'armed'
    assert dev.admin('reboot')[0] == 200
    assert dev.board.wait_boots(2, timeout=20), dev.console()[-2000:]
    assert dev.board.wait_ready(list(dev.ports.values()), timeout=30), dev.console()[-2000:]
    assert dev.board.exit_codes[0] == 20                      # machine.reset()
    a = alarm(dev)
    assert a['state'] == 'armed' and a['commanded'] == 'armed', a
    a = frames_after(dev, 5)                                  # detection runs again by itself
    assert a['alarms'] == 0, a
    dev.board.control('camera', motion=True)                  # and it still alarms
    wait(lambda: alarm(dev)['alarms'], 10, 'an alarm after the reboot')

    assert dev.admin('disarm')[0] == 200                      # and disarmed survives a power cut
    dev.board.power_cycle()
    assert dev.board.wait_boots(3, timeout=20), dev.console()[-2000:]
    assert dev.board.wait_ready(list(dev.ports.values()), timeout=30), dev.console()[-2000:]
    a = alarm(dev)
    assert a['state'] == 'disarmed' and a['alarms'] == 0, a


# --- (3) auto-arm: management lost and the Internet up ---------------------------------------------

def lost_management(peers, lfcp_port, probe, telegram=None, **alarm_cfg):
    return peers.config(servers=[lfcp_port], probe=probe, telegram=telegram,
                        lfcp={'unreachable_after_s': 2},
                        alarm=dict({'auto_arm_after_s': 2}, **alarm_cfg))


def test_auto_arms_when_management_is_lost_and_restores_when_it_returns(firmware, peers):
    lost = closed_port(socket.SOCK_DGRAM)                     # no management server answers there
    net = peers.internet()
    tg = peers.telegram()
    dev = firmware(lost_management(peers, lost, [net.port], tg, on_management_return='restore'))
    assert alarm(dev)['state'] == 'disarmed'
    a = wait(lambda: (lambda a: a if a['state'] == 'auto-armed' else None)(alarm(dev)), 20,
             'auto-arm')
    assert a['commanded'] == 'disarmed' and 'auto_arm_note' not in a, a
    assert net.connections >= 1                               # it asked the Internet first
    st = dev.status()
    assert st['lfcp']['up'] is False and st['internet']['up'] is True, st
    assert dev.wait_console('alarm auto-armed (management lost, Internet up)', 5)
    frames_after(dev, 3)                                      # and it really watches
    said = '%s: alarm auto-armed (management lost, Internet up)' % NAME
    assert tg.wait(lambda: said in [m['text'] for m in tg.messages], 15), tg.messages

    srv = peers.lfcp(port=lost)                               # management returns
    a = wait(lambda: (lambda a: a if a['state'] == 'disarmed' else None)(alarm(dev)), 15,
             'the commanded state back')
    assert 'management_lost_s' not in a, a
    assert dev.wait_console('management is back: restoring the commanded state', 5)
    assert peers.reachable(srv, NAME)
    assert tg.wait(lambda: any('alarm disarmed (management is back' in m['text']
                               for m in tg.messages), 15), tg.messages
    assert [m['chat_id'] for m in tg.messages] == [CHAT, CHAT]


def test_does_not_auto_arm_without_internet_and_says_why(firmware, peers):
    lost = closed_port(socket.SOCK_DGRAM)
    dead = closed_port()                                      # the probe's host refuses
    dev = firmware(lost_management(peers, lost, [dead]))
    a = wait(lambda: (lambda a: a if a.get('auto_arm_note') else None)(alarm(dev)), 20,
             'the auto-arm note')
    assert a['state'] == 'disarmed' and 'no Internet' in a['auto_arm_note'], a
    assert a['management_lost_s'] >= 2
    st = dev.status()
    assert st['internet']['up'] is False and str(dead) in st['internet']['last_error'], st
    assert dev.wait_console('management lost but no Internet: not auto-arming', 5)
    time.sleep(1.5)                                           # and it stays so
    assert alarm(dev)['state'] == 'disarmed'


# --- (4) no alarm on the first frames after arming or after a camera restart -----------------------

@pytest.fixture(scope='module')
def moved_view(tmp_path_factory):
    """The still room with a box in it (a tenth of the view): what a stale background, learned on
    the empty room, would call motion. Four frames of different sensor noise."""
    from sim import scene
    d = tmp_path_factory.mktemp('moved_view')
    for i in range(4):
        img = scene.render(640, 480, objects=[scene.box(0.3, 0.45, 0.3, 0.35)], seed=900 + i)
        (d / ('%04d.jpg' % i)).write_bytes(scene.encode_jpeg(img))
    return str(d)


def test_no_alarm_on_the_first_frames_after_arming_or_a_camera_restart(firmware, moved_view):
    dev = firmware({'alarm': {'event_gap_s': 1}})
    assert dev.admin('arm')[0] == 200
    frames_after(dev, 8)                                      # background: the empty room

    # camera restart onto a changed view: the detector starts again from the first frame
    assert dev.admin('camera_off')[0] == 200
    wait(lambda: dev.status()['camera']['state'] == 'off', 10, 'camera off')
    dev.board.control('camera', folder=moved_view)
    assert dev.admin('camera_on')[0] == 200
    a = frames_after(dev, 10)
    assert a['alarms'] == 0, a

    # arming again onto a changed view: likewise
    assert dev.admin('disarm')[0] == 200
    dev.board.control('camera', folder=None)
    time.sleep(0.5)                                           # the empty room is on again
    assert dev.admin('arm')[0] == 200
    a = frames_after(dev, 10)
    assert a['alarms'] == 0, a

    # the control: the same change while armed and running is an alarm, so the two quiet
    # phases above owe their silence to the restart, not to a change too small to see
    dev.board.control('camera', folder=moved_view)
    wait(lambda: alarm(dev)['alarms'], 10, 'an alarm for the box appearing')


# --- (5) detection while four viewers stream VGA ----------------------------------------------------

def watch(port, seconds, out, i):
    """Whole frames one viewer receives in `seconds` (after its first frame)."""
    r = MjpegReader(port, timeout=10)
    try:
        r.frame()
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            r.frame()
            n += 1
        out[i] = n
    finally:
        r.close()


def test_stream_keeps_camera_rate_with_detection_and_four_viewers(firmware):
    dev = firmware({'alarm': {'detect_fps': 5}})              # VGA: 25 fps from the sensor
    assert dev.admin('arm')[0] == 200
    frames_after(dev, 3)
    seconds, viewers = 4.0, 4
    out = [None] * viewers
    checked = alarm(dev)['frames_checked']
    captures = dev.stats()['captures']
    threads = [threading.Thread(target=watch, args=(dev.ports['stream'], seconds, out, i))
               for i in range(viewers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 20)
    time.sleep(0.2)                                           # camera_stats.json catches up
    captures = dev.stats()['captures'] - captures
    a = alarm(dev)
    assert all(n is not None for n in out), out
    fps = [n / seconds for n in out]
    assert min(fps) >= 15, fps                                # camera rate is 25
    # detection looked at the shared frames and captured nothing of its own
    assert a['frames_checked'] - checked >= 10 and a['alarms'] == 0, a
    # one capture per streamed frame: a capture of its own for detection would add ~20
    assert captures <= max(out) + 10, (captures, out, a['frames_checked'] - checked)


def test_a_corrupt_alarm_state_file_does_not_stop_the_boot(firmware, tmp_path):
    """alarm.json cut short (a write interrupted before the store was atomic, a flash fault):
    the board still boots, disarmed, and says why."""
    flash = tmp_path / 'flash'
    flash.mkdir()
    (flash / 'alarm.json').write_text('{"state": "arm')
    dev = firmware()
    assert dev.status()['alarm']['state'] == 'disarmed'
    assert dev.wait_console('alarm.json: not valid JSON')
