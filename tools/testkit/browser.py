"""Headless Chromium for the page tests (selenium; skipped with a reason when it is missing)."""
from testkit.helpers import need_binary


def chromium(tmp_path, size=(1280, 800)):
    """A headless Chromium of this window size (a phone below 500 px wide); call quit()."""
    need_binary('chromium')
    driver_path = need_binary('chromedriver', 'chromium-driver')
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = '/usr/bin/chromium'
    for a in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
              '--disable-background-networking', '--disable-component-update', '--disable-sync',
              '--user-data-dir=%s' % (tmp_path / 'profile'), '--hide-scrollbars'):
        opts.add_argument(a)
    if size[0] < 500:    # a phone: its viewport, its pixel ratio of 1 for the screenshot checks
        opts.add_experimental_option('mobileEmulation', {'deviceMetrics': {
            'width': size[0], 'height': size[1], 'pixelRatio': 1.0, 'mobile': True, 'touch': True}})
    else:
        opts.add_argument('--window-size=%d,%d' % size)
    drv = webdriver.Chrome(service=Service(driver_path), options=opts)
    drv.set_page_load_timeout(60)   # a loaded CI machine starts Chromium slowly
    return drv


def wait(drv, js, timeout=30):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(drv, timeout).until(lambda d: d.execute_script(js))
