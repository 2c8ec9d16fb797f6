"""The admin page in headless Chromium, opened with the login in the URL, at a phone's width
(390 px) and a desktop's: the state at a glance without scrolling, buttons that say what they
did, the log as a list, settings changed from the page; the screenshots are checked too."""
import json

import pytest
from conftest import ADMIN
from testkit.browser import chromium, wait

WIDTHS = {'phone': (390, 844), 'desktop': (1280, 800)}
TILES = ('alarm', 'camera', 'uplink', 'servers', 'telegram', 'time', 'heap', 'uptime', 'update')


def rect(drv, id_):
    return drv.execute_script("const r=document.getElementById(arguments[0]).getBoundingClientRect();"
                              "return [r.left,r.top,r.right,r.bottom,innerWidth,innerHeight]", id_)


def tile_colour(png, r):
    """The colour of a tile's background in the screenshot, away from its text."""
    import io

    from PIL import Image
    im = Image.open(io.BytesIO(png)).convert('RGB')
    return im.getpixel((int(r[2]) - 6, int(r[1]) + 4))


@pytest.mark.timeout(120)
@pytest.mark.parametrize('width', sorted(WIDTHS))
def test_the_page_shows_the_state_at_a_glance(firmware, tmp_path, width):
    dev = firmware({'lfcp': {'key': 'lfcp-key-0123456789', 'servers': ['127.0.0.1:9']}})
    drv = chromium(tmp_path, WIDTHS[width])
    try:
        # the login in the URL: fetch() from such a page's relative URLs would be refused
        drv.get('http://%s:%s@127.0.0.1:%d/' % (ADMIN[0], ADMIN[1], dev.ports['admin']))
        wait(drv, "return document.querySelector('#t-alarm span').textContent=='Disarmed'")
        wait(drv, "return document.querySelector('#t-uplink span').textContent.includes('connected to home')")
        text = drv.execute_script('return document.body.innerText')
        assert '"uptime_s"' not in text and '{' not in text.split('Settings')[0]   # words, not JSON
        assert 'signal good (-55 dBm)' in text
        assert '0 of 1 reachable' in text and 'not configured' in text
        # every tile of the glance is on the first screen, and nothing scrolls sideways
        for t in TILES:
            r = rect(drv, 't-' + t)
            assert r[3] <= r[5] and r[2] <= r[4], (t, r)
        assert drv.execute_script('return document.documentElement.scrollWidth<=innerWidth')
        assert drv.execute_script("return document.querySelector('link[rel=icon]').href.startsWith('data:image/svg')")
        before = tile_colour(drv.get_screenshot_as_png(), rect(drv, 't-alarm'))
        drv.save_screenshot(str(tmp_path / ('admin-%s-disarmed.png' % width)))
        # a button says what it did, and the glance follows
        wait(drv, "return !!document.querySelector('button[data-a=arm]')")
        drv.execute_script("document.querySelector('button[data-a=arm]').click()")
        wait(drv, "return document.getElementById('res-arm').textContent=='✓ alarm armed'")
        wait(drv, "return document.querySelector('#t-alarm span').textContent=='ARMED'")
        png = drv.get_screenshot_as_png()
        (tmp_path / ('admin-%s-armed.png' % width)).write_bytes(png)
        armed = tile_colour(png, rect(drv, 't-alarm'))
        assert armed[0] > 90 and armed[0] > 2 * armed[1], armed      # red when armed
        assert before[1] > before[0], before                          # green-grey when not
        assert dev.status()['alarm']['state'] == 'armed'
        # the log: a list with levels
        wait(drv, "return document.querySelectorAll('#log li').length>3")
        levels = drv.execute_script("return [...document.querySelectorAll('#log li .lv')].map(e=>e.textContent)")
        assert 'info' in levels and set(levels) <= {'info', 'warning', 'error'}
        assert drv.execute_script("return [...document.querySelectorAll('#log li')].some(l=>l.textContent.includes('command arm from http'))")
    finally:
        drv.quit()


@pytest.mark.timeout(120)
def test_settings_change_from_the_page_with_validation(firmware, tmp_path):
    dev = firmware()
    drv = chromium(tmp_path, WIDTHS['phone'])
    try:
        drv.get('http://%s:%s@127.0.0.1:%d/' % (ADMIN[0], ADMIN[1], dev.ports['admin']))
        wait(drv, "return !!document.getElementById('set-camera-quality')")
        # a field for every key of every section, and no secret in the page
        from firmware.config import schema
        ids = set(drv.execute_script("return [...document.querySelectorAll('#settings [id^=set-]')].map(e=>e.id)"))
        assert ids == set('set-%s-%s' % (s, k) for s in schema.SCHEMA for k in schema.SCHEMA[s])
        assert ADMIN[1] not in drv.page_source and 'home-pass-1' not in drv.page_source
        drv.execute_script("document.getElementById('sec-camera').open=true;"
                           "const e=document.getElementById('set-camera-quality');e.value='5';"
                           "document.getElementById('save-camera').click()")
        wait(drv, "return document.getElementById('saved-camera').textContent.includes('camera.quality: must be 10..63, got 5')")
        assert 'quality' not in json.loads((dev.flash / 'config.json').read_text())['camera']
        drv.execute_script("const e=document.getElementById('set-camera-quality');e.value='20';"
                           "document.getElementById('save-camera').click()")
        wait(drv, "return document.getElementById('saved-camera').textContent.includes('restart needed for: camera.quality')")
        assert json.loads((dev.flash / 'config.json').read_text())['camera']['quality'] == 20
        drv.execute_script("document.getElementById('sec-alarm').open=true;"
                           "document.getElementById('set-alarm-event_gap_s').value='9';"
                           "document.getElementById('save-alarm').click()")
        wait(drv, "return document.getElementById('saved-alarm').textContent.includes('applied now: alarm.event_gap_s')")
        # the upstream list, edited as shown (passwords only as password_set), keeps the password
        drv.execute_script("document.getElementById('sec-wifi').open=true;"
                           "const e=document.getElementById('set-wifi-upstream');"
                           "const v=JSON.parse(e.value);v.push({ssid:'spare',password:'spare-pass-1'});"
                           "e.value=JSON.stringify(v);document.getElementById('save-wifi').click()")
        wait(drv, "return document.getElementById('saved-wifi').textContent.startsWith('✓ saved')")
        assert json.loads((dev.flash / 'config.json').read_text())['wifi']['upstream'] == [
            {'ssid': 'home', 'password': 'home-pass-1'}, {'ssid': 'spare', 'password': 'spare-pass-1'}]
        drv.save_screenshot(str(tmp_path / 'settings-phone.png'))
    finally:
        drv.quit()


@pytest.mark.timeout(120)
def test_the_latest_alarm_shows_its_photo(firmware, tmp_path):
    """Recent alarms with their photo: the latest alarm's frame, fetched with the login of the
    URL, shown under its line; before any alarm the photo route says there is none."""
    dev = firmware()
    code, _, body = dev.get('admin', '/alarm.jpg', auth=ADMIN)
    assert code == 404 and b'no alarm photo' in body
    assert dev.get('admin', '/alarm.jpg')[0] == 401
    drv = chromium(tmp_path, WIDTHS['phone'])
    try:
        drv.get('http://%s:%s@127.0.0.1:%d/' % (ADMIN[0], ADMIN[1], dev.ports['admin']))
        wait(drv, "return !!document.querySelector('button[data-a=alarm_test]')")
        drv.execute_script("document.querySelector('button[data-a=alarm_test]').click()")
        wait(drv, "const i=document.getElementById('alarm-photo');return !!i&&i.complete&&i.naturalWidth>0")
        size = drv.execute_script("const i=document.getElementById('alarm-photo');"
                                  "return [i.naturalWidth,i.naturalHeight]")
        assert size == [640, 480], size
        assert 'test' in drv.execute_script("return document.querySelector('#alarms li').textContent")
        drv.save_screenshot(str(tmp_path / 'admin-alarm-photo.png'))
    finally:
        drv.quit()
    code, headers, body = dev.get('admin', '/alarm.jpg', auth=ADMIN)
    assert code == 200 and body[:2] == b'\xff\xd8' and headers['Content-Type'] == 'image/jpeg'
