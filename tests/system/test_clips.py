"""Clips on the simulated microSD card: recorded from the scene, checked with ffprobe/ffmpeg,
served by the admin server, robust to card faults. The card is an image file under the board's
.sim/ directory (tools/sim/board/machine.py SDCard), made by tools/testkit/vm/sdcard_image.py."""
import hashlib
import json
import os
import subprocess
import time

import pytest
from testkit.helpers import need_binary
from testkit.paths import ROOT
from testkit.peers import CHAT, peers, wait  # noqa: F401  (peers is a fixture)

pytestmark = pytest.mark.timeout(120)
VM = os.path.join(ROOT, '.venv', 'bin', 'micropython')
TOOL = os.path.join(ROOT, 'tools', 'testkit', 'vm', 'sdcard_image.py')
FRAMES = os.path.join(ROOT, 'sim', 'frames', '320x240')
FPS = 10


def make_card(tmp_path, size_mb=16, fill_mb=None, name='flash'):
    sim = tmp_path / name / '.sim'
    sim.mkdir(parents=True, exist_ok=True)
    cmd = [VM, TOOL, 'mkfs', str(sim / 'sdcard.img'), str(size_mb)]
    if fill_mb:
        cmd.append(str(fill_mb))
    subprocess.run(cmd, check=True, timeout=60)
    return sim / 'sdcard.img'


def config(**clips):
    c = {'fps': FPS, 'pre_s': 2, 'post_s': 2, 'max_s': 30, 'reserve_mb': 1}
    c.update(clips)
    return {'camera': {'framesize': 'QVGA'}, 'clips': c, 'storage': {'sdcard': True},
            'alarm': {'event_gap_s': 0, 'detect_fps': 5}}


def clips_status(dev):
    return dev.status()['clips']


def listing(dev):
    code, _, body = dev.get('admin', '/clips/list', auth=('admin', 'test-admin-pw'))
    assert code == 200, body
    return json.loads(body)


def download(dev, name, dest, headers=None):
    code, h, body = dev.get('admin', '/clips/' + name + '?download=1', auth=('admin', 'test-admin-pw'),
                            headers=headers, timeout=30)
    assert code in (200, 206), body
    if dest:
        dest.write_bytes(body)
    return code, h, body


def probe(path):
    ffprobe = need_binary('ffprobe', 'ffmpeg')
    r = subprocess.run([ffprobe, '-v', 'error', '-count_frames', '-select_streams', 'v:0',
                        '-show_entries', 'stream=codec_name,width,height,r_frame_rate,avg_frame_rate,'
                        'nb_read_frames,nb_frames,duration', '-of', 'json', str(path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)['streams'][0]


def scene_hashes(kind):
    d = os.path.join(FRAMES, kind)
    return set(hashlib.sha1(open(os.path.join(d, n), 'rb').read()).hexdigest()
               for n in os.listdir(d) if n.endswith('.jpg'))


def frames_of(path, tmp_path):
    """The clip's JPEGs in order, as ffmpeg demuxes them (no re-encode)."""
    ffmpeg = need_binary('ffmpeg')
    out = tmp_path / 'frames'
    out.mkdir(exist_ok=True)
    r = subprocess.run([ffmpeg, '-v', 'error', '-i', str(path), '-c', 'copy', '-f', 'image2',
                        str(out / '%04d.jpg')], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [hashlib.sha1((out / n).read_bytes()).hexdigest() for n in sorted(os.listdir(out))]


def record_motion(dev, seconds=2.0):
    """Arm, let the still scene fill the pre-trigger ring, then motion for `seconds`, then still."""
    assert dev.admin('arm')[0] == 200
    wait(lambda: clips_status(dev)['ring_frames'] >= 2 * FPS, 20, 'a full pre-trigger ring')
    dev.board.control('camera', motion=True)
    wait(lambda: clips_status(dev)['recording'], 20, 'a clip recording after the alarm')
    time.sleep(seconds)             # the scene itself: motion goes on this long
    dev.board.control('camera', motion=False)
    return wait(lambda: clips_status(dev)['last'], 30, 'the clip saved')


def test_alarm_clip_holds_before_and_after_at_the_right_rate(firmware, tmp_path):
    make_card(tmp_path)
    dev = firmware(config())
    assert dev.status()['card']['state'] == 'mounted'
    last = record_motion(dev)
    listed = listing(dev)['clips']
    assert len(listed) == 1 and listed[0]['reason'] == 'motion' and listed[0]['complete']
    name = listed[0]['name']
    assert name.startswith(time.strftime('%Y-%m-%d', time.localtime(last['time'])) + '/')
    avi = tmp_path / 'clip.avi'
    download(dev, name, avi)
    s = probe(avi)
    assert s['codec_name'] == 'mjpeg' and (s['width'], s['height']) == (320, 240)
    assert s['r_frame_rate'] == '%d/1' % FPS
    n = last['frames']
    assert abs(float(s['duration']) - n / FPS) < 0.11, s
    hashes = frames_of(avi, tmp_path)
    assert int(s['nb_read_frames']) == len(hashes) == n - clips_status(dev)['gaps']
    still, motion = scene_hashes('still'), scene_hashes('motion')
    kinds = ''.join('s' if h in still else 'm' if h in motion else '?' for h in hashes)
    # the still scene before the trigger, the motion, the still scene after it, nothing else
    head = len(kinds) - len(kinds.lstrip('s'))
    tail = len(kinds) - len(kinds.rstrip('s'))
    assert '?' not in kinds and 'm' in kinds, kinds
    assert kinds.strip('s').count('s') == 0, kinds
    # the 2 s before the trigger: the still scene, then the motion the detector needed to decide
    assert last['pre'] == 2 * FPS and 1 <= head < last['pre'], (last, kinds)
    # post_s (2 s) after the last motion: the still scene, less the slots a loaded PC missed
    assert tail >= FPS, kinds
    st = clips_status(dev)
    assert st['dropped'] == 0 and st['failed'] == 0


def test_alarm_clip_reaches_telegram_after_the_photo_and_lfcp_gets_its_name(firmware, peers, tmp_path):
    make_card(tmp_path)
    srv = peers.lfcp()
    tg = peers.telegram()
    cfg = peers.config(servers=[srv], telegram=tg)
    for k, v in config().items():
        cfg.setdefault(k, {}).update(v)
    dev = firmware(cfg)
    wait(lambda: peers.reachable(srv, 'testcam'), 15, 'heartbeats at the LFCP server')
    last = record_motion(dev, seconds=1.0)
    wait(lambda: tg.documents, 30, 'the clip at the fake Bot API')
    doc = tg.documents[0]
    assert doc['chat_id'] == CHAT and doc['content_type'] == 'video/x-msvideo'
    assert doc['filename'].endswith('-motion.avi') and 'clip of the motion alarm' in doc['caption']
    assert tg.photos and tg.photos[0]['t'] < doc['t']          # the photo went first
    name = last['path'].split('/clips/')[1]
    _, _, body = download(dev, name, None)
    assert doc['data'] == body                                 # the very file on the card
    p = tmp_path / 'tg.avi'
    p.write_bytes(doc['data'])
    assert int(probe(p)['nb_read_frames']) > 0
    wait(lambda: [t for t in peers.logs(srv, 'testcam') if 'clip_saved' in t and name.split('/')[1] in t],
         15, 'a LOG line naming the clip')


def test_clip_routes_need_auth_and_serve_ranges(firmware, tmp_path):
    make_card(tmp_path)
    dev = firmware(config())
    assert dev.admin('record_start')[0] == 200
    wait(lambda: clips_status(dev)['frames'] >= 15, 20, 'frames written')
    code, _, body = dev.admin('record_stop')
    assert code == 200, body
    last = wait(lambda: clips_status(dev)['last'], 20, 'the clip saved')
    assert last['reason'] == 'manual'
    name = listing(dev)['clips'][0]['name']
    assert dev.get('admin', '/clips/list')[0] == 401
    assert dev.get('admin', '/clips/' + name)[0] == 401
    _, h, whole = download(dev, name, None)
    assert h['Accept-Ranges'] == 'bytes' and int(h['Content-Length']) == len(whole)
    code, h, part = download(dev, name, None, headers={'Range': 'bytes=100-1099'})
    assert code == 206 and part == whole[100:1100]
    assert h['Content-Range'] == 'bytes 100-1099/%d' % len(whole)
    code, h, part = download(dev, name, None, headers={'Range': 'bytes=-10'})
    assert code == 206 and part == whole[-10:]
    code = dev.get('admin', '/clips/' + name, auth=('admin', 'test-admin-pw'),
                   headers={'Range': 'bytes=%d-' % len(whole)})[0]
    assert code == 416
    code, h, thumb = dev.get('admin', '/clips/%s/thumb.jpg' % name, auth=('admin', 'test-admin-pw'))
    assert code == 200 and thumb[:2] == b'\xff\xd8' and thumb in whole
    assert dev.get('admin', '/clips/../../config.json', auth=('admin', 'test-admin-pw'))[0] in (400, 404)
    code, _, body = dev.get('admin', '/clips/%s/delete' % name, auth=('admin', 'test-admin-pw'), data=b'')
    assert code == 200, body
    assert listing(dev)['clips'] == []


def stream_and_alarm_alive(dev):
    """The stream delivers frames and the alarm fires, whatever the card does."""
    from testkit.helpers import MjpegReader
    r = MjpegReader(dev.ports['stream'])
    try:
        for _ in range(5):
            _, jpeg = r.frame()
            assert jpeg[:2] == b'\xff\xd8'
    finally:
        r.close()
    before = dev.status()['alarm']['alarms']
    assert dev.admin('arm')[0] == 200
    dev.board.control('camera', motion=True)
    wait(lambda: dev.status()['alarm']['alarms'] > before, 20, 'an alarm')
    dev.board.control('camera', motion=False)


@pytest.mark.parametrize('fault', ['none', 'unformatted', 'full'])
def test_card_faults_leave_the_stream_and_the_alarm(firmware, tmp_path, fault):
    if fault == 'unformatted':
        sim = tmp_path / 'flash' / '.sim'
        sim.mkdir(parents=True)
        (sim / 'sdcard.img').write_bytes(bytes(4 << 20))
    elif fault == 'full':
        make_card(tmp_path, 16, 15)
    dev = firmware(config())
    stream_and_alarm_alive(dev)
    want = {'none': 'none', 'unformatted': 'unformatted', 'full': 'full'}[fault]
    card = wait(lambda: (lambda c: c if c['state'] == want else None)(dev.status()['card']), 20,
                'card state %s' % want)
    assert card['error']
    assert dev.wait_console('card: %s' % want)
    stream_and_alarm_alive(dev)


def test_unformatted_card_is_formatted_when_asked(firmware, tmp_path):
    sim = tmp_path / 'flash' / '.sim'
    sim.mkdir(parents=True)
    (sim / 'sdcard.img').write_bytes(bytes(8 << 20))
    dev = firmware(dict(config(), storage={'sdcard': True, 'format_blank': True}))
    assert dev.status()['card']['state'] == 'mounted'


def test_card_pulled_mid_clip_then_back_plays_up_to_the_last_frame(firmware, tmp_path):
    make_card(tmp_path)
    dev = firmware(config())
    assert dev.admin('record_start')[0] == 200
    wait(lambda: clips_status(dev)['frames'] >= 25, 20, 'frames written')
    dev.board.control('sdcard', present=False)
    wait(lambda: dev.status()['card']['state'] == 'removed', 20, 'the card seen as removed')
    stream_and_alarm_alive(dev)
    assert clips_status(dev)['recording'] is None
    dev.board.control('sdcard', present=True)
    wait(lambda: dev.status()['card']['state'] == 'mounted', 30, 'the card mounted again')
    wait(lambda: clips_status(dev)['repaired'] == 1, 10, 'the clip repaired')
    clips = listing(dev)['clips']
    assert len(clips) == 1 and clips[0]['complete'] and clips[0]['frames'] >= FPS, clips
    p = tmp_path / 'pulled.avi'
    download(dev, clips[0]['name'], p)
    assert int(probe(p)['nb_read_frames']) == clips[0]['frames'] - clips_status(dev)['gaps']


def test_power_cut_mid_clip_next_boot_plays_every_clip(firmware, tmp_path):
    make_card(tmp_path)
    dev = firmware(config())
    assert dev.admin('record_start')[0] == 200
    wait(lambda: clips_status(dev)['frames'] >= 12, 20, 'frames written')
    assert dev.admin('record_stop')[0] == 200
    wait(lambda: clips_status(dev)['last'], 20, 'a complete clip')
    time.sleep(1.1)                 # the next clip gets another name (one per second)
    assert dev.admin('record_start')[0] == 200
    wait(lambda: clips_status(dev)['frames'] >= 40, 20, 'frames of the second clip written')
    dev.board.power_cycle()
    dev.board.wait_boots(2)
    assert dev.board.wait_ready(list(dev.ports.values()), timeout=30)
    assert clips_status(dev)['repaired'] == 1
    clips = listing(dev)['clips']
    assert len(clips) == 2 and all(c['complete'] for c in clips), clips
    assert clips[0]['frames'] >= FPS            # the cut one: up to its last synced second
    for i, c in enumerate(clips):
        p = tmp_path / ('boot%d.avi' % i)
        download(dev, c['name'], p)
        s = probe(p)
        assert int(s['nb_read_frames']) > 0 and s['r_frame_rate'] == '%d/1' % FPS


def test_retention_deletes_the_oldest_clips_never_the_one_recording(firmware, tmp_path):
    make_card(tmp_path, 16, 13)
    dev = firmware(config(reserve_mb=2, max_s=5))
    made = []
    for i in range(4):
        before = clips_status(dev)['clips']
        assert dev.admin('record_start')[0] == 200, i
        wait(lambda: clips_status(dev)['clips'] > before, 30, 'clip %d saved (max_s)' % i)
        made.append(clips_status(dev)['last']['path'].split('/clips/')[1])
        time.sleep(1.1)
    st = clips_status(dev)
    assert st['deleted'] >= 1 and st['failed'] == 0, st
    names = [c['name'] for c in listing(dev)['clips']]
    assert made[-1] in names and made[0] not in names
    assert names == sorted(names, reverse=True)          # newest first
    card = dev.status()['card']
    assert card['state'] == 'mounted' and card['free'] >= 2 << 20, card


def test_chromium_lists_plays_and_downloads_a_clip(firmware, tmp_path):
    need_binary('chromium')
    driver_path = need_binary('chromedriver', 'chromium-driver')
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    make_card(tmp_path)
    dev = firmware(config())
    last = record_motion(dev, seconds=1.0)
    downloads = tmp_path / 'downloads'
    downloads.mkdir()
    opts = webdriver.ChromeOptions()
    opts.binary_location = '/usr/bin/chromium'
    for a in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
              '--disable-background-networking', '--disable-component-update', '--disable-sync',
              '--user-data-dir=%s' % (tmp_path / 'profile'), '--window-size=1024,900'):
        opts.add_argument(a)
    opts.add_experimental_option('prefs', {'download.default_directory': str(downloads),
                                           'download.prompt_for_download': False})
    drv = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        drv.set_page_load_timeout(60)
        # credentials in the URL: Chromium then sends them with the page's own requests
        drv.get('http://admin:test-admin-pw@127.0.0.1:%d/' % dev.ports['admin'])
        WebDriverWait(drv, 60).until(lambda d: d.find_elements(By.ID, 'clips-link'))
        drv.find_element(By.ID, 'clips-link').click()
        WebDriverWait(drv, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, 'tr.clip'))
        rows = drv.find_elements(By.CSS_SELECTOR, 'tr.clip')
        name = last['path'].split('/clips/')[1]
        assert len(rows) == 1 and rows[0].get_attribute('data-name') == name
        assert 'motion' in rows[0].text and '%.1f s' % (last['frames'] / FPS) in rows[0].text
        WebDriverWait(drv, 60).until(lambda d: d.execute_script(
            "const i=document.querySelector('img.t');return i.complete&&i.naturalWidth==320"))
        rows[0].find_element(By.CSS_SELECTOR, 'button.play').click()
        WebDriverWait(drv, 60).until(lambda d: d.execute_script(
            "const i=document.getElementById('player');return i.naturalWidth==320"))
        drv.save_screenshot(str(tmp_path / 'clips.png'))
        assert (tmp_path / 'clips.png').stat().st_size > 0
        rows[0].find_element(By.CSS_SELECTOR, 'a.download').click()
        wait(lambda: [p for p in downloads.iterdir() if p.suffix == '.avi'], 30, 'the downloaded clip')
        got = [p for p in downloads.iterdir() if p.suffix == '.avi'][0]
        _, _, body = download(dev, name, None)
        wait(lambda: got.stat().st_size == len(body), 10, 'the whole download')
        assert got.read_bytes() == body
        assert int(probe(got)['nb_read_frames']) > 0
    finally:
        drv.quit()


def test_card_pulled_while_idle_is_noticed_and_mounted_again(firmware, tmp_path):
    make_card(tmp_path)
    dev = firmware(config())
    assert dev.status()['card']['state'] == 'mounted'
    dev.board.control('sdcard', present=False)
    wait(lambda: dev.status()['card']['state'] == 'removed', 30, 'the idle card seen as removed')
    code, _, body = dev.admin('record_start')
    assert code == 503 and b'removed' in body
    dev.board.control('sdcard', present=True)
    wait(lambda: dev.status()['card']['state'] == 'mounted', 30, 'the card mounted again')
    assert dev.admin('record_start')[0] == 200


def test_a_failed_clip_upload_is_retried_and_the_stream_goes_on(firmware, peers, tmp_path):
    make_card(tmp_path)
    tg = peers.telegram()
    cfg = peers.config(telegram=tg)
    for k, v in config().items():
        cfg.setdefault(k, {}).update(v)
    dev = firmware(cfg)
    tg.fail('sendDocument', '502', count=1)
    tg.fail('sendDocument', 'reset', count=1)
    record_motion(dev, seconds=1.0)
    wait(lambda: tg.documents, 60, 'the clip at the fake Bot API after two failures')
    assert [c[2] for c in tg.calls if c[1] == 'sendDocument'][:3] == [502, 'reset', 200]
    assert dev.status()['telegram']['retries'] >= 2
    stream_and_alarm_alive(dev)


def open_avi(frames, w=320, h=240, fps=FPS):
    """An AVI as the firmware leaves it open (RIFF size 0, no idx1), for the card image."""
    import struct
    from firmware.storage import avi
    out = bytearray(avi.header(w, h, fps, 0, avi.OPEN, 4, 0))
    for j in frames:
        out += b'00dc' + struct.pack('<I', len(j)) + j + (b'\0' if len(j) & 1 else b'')
    return bytes(out)


def test_timelapse_one_frame_every_n_seconds_and_past_days_finished(firmware, tmp_path):
    img = make_card(tmp_path)
    still = sorted(n for n in os.listdir(os.path.join(FRAMES, 'still')) if n.endswith('.jpg'))[:3]
    old = tmp_path / 'old.avi'
    old.write_bytes(open_avi([open(os.path.join(FRAMES, 'still', n), 'rb').read() for n in still]))
    subprocess.run([VM, TOOL, 'put', str(img), str(old), 'clips/2024-01-01/timelapse.avi'], check=True,
                   timeout=60)
    dev = firmware(config(timelapse_s=1))
    wait(lambda: clips_status(dev)['lapse_frames'] >= 4, 30, 'time-lapse frames')
    clips = dict((c['name'], c) for c in listing(dev)['clips'])
    past = clips['2024-01-01/timelapse.avi']
    assert past['complete'] and past['frames'] == 3 and past['reason'] == 'time-lapse'
    today = [c for n, c in clips.items() if n.endswith('/timelapse.avi') and not n.startswith(('2000', '2024'))]
    assert len(today) == 1 and not today[0]['complete']     # still growing: finished at midnight
    for c in (past, today[0]):
        p = tmp_path / (c['day'] + '.avi')
        download(dev, c['name'], p)
        assert int(probe(p)["nb_read_frames"]) >= 3, (c, p.stat().st_size)
