"""Unmodified real clients against the firmware: ffmpeg reads the stream, Chromium shows the page."""
import subprocess

import pytest
from testkit.helpers import need_binary


@pytest.mark.parametrize('path', ['/stream', '/?action=stream'])
def test_ffmpeg_reads_30_frames(firmware, path, tmp_path):
    ffmpeg = need_binary('ffmpeg')
    dev = firmware({'camera': {'framesize': 'QVGA'}})
    out = tmp_path / 'frame%02d.jpg'
    r = subprocess.run([ffmpeg, '-hide_banner', '-loglevel', 'error', '-rw_timeout', '10000000',
                        '-i', dev.url('stream', path), '-frames:v', '30', '-c', 'copy',
                        str(out)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    frames = sorted(tmp_path.glob('frame*.jpg'))
    assert len(frames) == 30
    from PIL import Image
    for f in frames:
        with Image.open(f) as im:
            assert im.size == (320, 240)


def test_chromium_renders_the_live_view(firmware, tmp_path):
    need_binary('chromium')
    driver_path = need_binary('chromedriver', 'chromium-driver')
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    dev = firmware({'camera': {'framesize': 'QVGA'}})
    opts = webdriver.ChromeOptions()
    opts.binary_location = '/usr/bin/chromium'
    for a in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
              '--disable-background-networking', '--disable-component-update', '--disable-sync',
              '--user-data-dir=%s' % (tmp_path / 'profile'), '--window-size=1024,700'):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        drv.set_page_load_timeout(20)
        drv.get(dev.url('control', '/'))
        # The <img> shows the MJPEG stream from port 81: it has rendered once it has a size.
        WebDriverWait(drv, 20).until(lambda d: d.execute_script(
            "const i=document.getElementById('view');return i.complete!==undefined&&i.naturalWidth>0"))
        w, h = drv.execute_script(
            "const i=document.getElementById('view');return [i.naturalWidth,i.naturalHeight]")
        assert (w, h) == (320, 240)
        # the settings were filled from /status
        assert drv.execute_script("return document.getElementById('framesize').value") == '5'
        drv.save_screenshot(str(tmp_path / 'control.png'))
        assert dev.status()['stream']['viewers'] >= 1
    finally:
        drv.quit()
