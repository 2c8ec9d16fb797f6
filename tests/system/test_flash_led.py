"""The flash LED (GPIO 4 by PWM, firmware/camera/flash.py) as CameraWebServer drives it, and the
flash on photos at night, on the whole firmware with either camera family.

The simulated PWM (tools/sim/board/machine.py) records the LED in $ESP32SIM/pwm4.json: duty_u16,
"lit" (how often it went from dark to lit), "lit_ms". While it is lit the simulated camera serves
the frames of camera.json "lit": a photo shows the flash.
"""
import io
import json
import os
import subprocess
import textwrap
import time

import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageStat
from sim import scene, simulate
from testkit.helpers import MjpegReader
from testkit.paths import ROOT
from testkit.peers import peers, wait  # noqa: F401  (peers is a fixture)

pytestmark = pytest.mark.timeout(90)
W, H = 320, 240
FAMILIES = ['functions', 'class']


def env(family):
    return {'SIM_CAMERA': 'class' if family == 'class' else ''}


def mean(jpeg):
    return ImageStat.Stat(Image.open(io.BytesIO(jpeg)).convert('L')).mean[0]


@pytest.fixture(scope='module')
def scenes(tmp_path_factory):
    """A dark room (mean grey ~17), the same room lit by the LED (a bright spot in the middle, as
    a flash lights what is in front of it: no uniform gain the detector could explain away) and
    daylight (~114)."""
    root = tmp_path_factory.mktemp('scenes')
    dark = scene.render(W, H, light=0.15)
    day = scene.render(W, H, light=1.0)
    spot = Image.new('L', (W, H), 0)
    ImageDraw.Draw(spot).ellipse((W // 4, H // 6, 3 * W // 4, 5 * H // 6), fill=255)
    lit = Image.composite(day, dark, spot.filter(ImageFilter.GaussianBlur(20)))
    out = {}
    d = root / 'dark_motion'         # a person crosses the dark room (mean grey ~25)
    d.mkdir()
    for i in range(16):
        im = scene.render(W, H, t=i / 16, objects=scene.crossing(i / 16), light=0.2, seed=i)
        (d / ('%04d.jpg' % i)).write_bytes(scene.encode_jpeg(im))
    out['dark_motion'] = str(d)
    for name, im in (('dark', dark), ('lit', lit), ('day', day)):
        d = root / name
        d.mkdir()
        for i in range(4):   # sensor noise differs per frame
            noisy = scene.render(W, H, light=0.15, seed=i) if name == 'dark' else im
            (d / ('%04d.jpg' % i)).write_bytes(scene.encode_jpeg(noisy))
        out[name] = str(d)
    return out


def led(dev):
    return dev.board.read('pwm4', {}) or {}


def control(dev, var, val):
    return dev.get('control', '/control?var=%s&val=%d' % (var, val))


def cws(dev):
    code, _, body = dev.get('control', '/status')
    assert code == 200
    return json.loads(body)


# --- led_intensity: CameraWebServer's control ----------------------------------------------------

@pytest.mark.parametrize('family', FAMILIES)
def test_led_intensity_sets_the_duty_and_capture_flashes(firmware, scenes, family):
    dev = firmware({'camera': {'framesize': 'QVGA'}}, env=env(family),
                   camera={'folder': scenes['dark'], 'lit': scenes['lit']})
    assert led(dev).get('duty_u16') == 0, 'the LED starts dark'
    assert b'id="led_intensity"' in dev.get('control', '/')[2], 'the page has the slider'
    assert cws(dev)['led_intensity'] == 0
    assert control(dev, 'led_intensity', 128)[0] == 200
    assert cws(dev)['led_intensity'] == 128
    assert led(dev).get('duty_u16', 0) == 0, 'nobody streams: not lit yet (CameraWebServer)'

    code, _, body = control(dev, 'led_intensity', 256)
    assert code == 400 and b'0..255' in body
    assert cws(dev)['led_intensity'] == 128

    # /capture: on, the sensor adapts, the frame, off
    code, hdr, photo = dev.get('control', '/capture')
    assert code == 200 and hdr['Content-Type'] == 'image/jpeg'
    assert mean(photo) > 35, 'the photo is the lit scene (mean grey %.0f)' % mean(photo)
    s = led(dev)
    assert s['lit'] == 1 and s['duty_u16'] == 0, s
    on = [d for _, d in s['log'] if d]
    assert on and all(abs(d - 128 * 65535 // 255) <= 8 for d in on), s   # 128/255 of full
    assert 100 <= s['lit_ms'] < 2000, s

    # led_intensity 0: /capture as before, no light
    assert control(dev, 'led_intensity', 0)[0] == 200
    code, _, photo = dev.get('control', '/capture')
    assert code == 200 and mean(photo) < 30
    assert led(dev)['lit'] == 1


@pytest.mark.parametrize('family', FAMILIES)
def test_stream_lights_the_led_until_the_last_viewer_leaves(firmware, family):
    dev = firmware({'camera': {'framesize': 'QVGA', 'flash_stream_max': 100}}, env=env(family))
    assert control(dev, 'led_intensity', 200)[0] == 200
    viewers = [MjpegReader(dev.ports['stream']) for _ in range(2)]
    try:
        for v in viewers:
            v.frame()
        s = led(dev)
        assert s['lit'] == 1 and abs(s['duty_u16'] - 100 * 257) <= 8, s   # capped while streaming
        viewers.pop().close()
        time.sleep(0.3)
        assert led(dev)['duty_u16'] > 0, 'one viewer still watches'
        # a change while streaming applies at once (CameraWebServer)
        assert control(dev, 'led_intensity', 50)[0] == 200
        assert abs(led(dev)['duty_u16'] - 50 * 257) <= 8
    finally:
        for v in viewers:
            v.close()
    wait(lambda: led(dev).get('duty_u16') == 0, 10, 'the LED off after the last viewer')
    assert led(dev)['lit'] == 1


def test_an_armed_camera_stays_dark_for_viewers(firmware):
    """camera.flash_stream 'disarmed' (the default): a viewer of an armed camera lights nothing."""
    dev = firmware({'camera': {'framesize': 'QVGA'}})
    assert control(dev, 'led_intensity', 200)[0] == 200
    assert dev.admin('arm')[0] == 200
    v = MjpegReader(dev.ports['stream'])
    try:
        v.frame()
        time.sleep(0.5)
        assert led(dev).get('duty_u16', 0) == 0
        assert dev.admin('disarm')[0] == 200
        wait(lambda: led(dev).get('duty_u16', 0) > 0, 5, 'lit once disarmed')
    finally:
        v.close()


def test_no_flash_pin_refuses_led_intensity(firmware):
    dev = firmware({'camera': {'framesize': 'QVGA', 'flash_pin': None}})
    code, _, body = control(dev, 'led_intensity', 100)
    assert code == 501 and b'no flash LED' in body, body
    assert 'led_intensity' not in cws(dev)
    assert dev.get('control', '/capture')[0] == 200
    assert led(dev) == {}


def test_flash_pin_is_checked_at_boot(firmware):
    dev = firmware({'camera': {'flash_pin': 36}}, ready=False)
    dev.wait_console('config refused', timeout=20)
    assert dev.wait_console('camera.flash_pin: must be null (no LED) or a free output GPIO')


# --- flash on photo at night ---------------------------------------------------------------------

@pytest.mark.parametrize('family', FAMILIES)
def test_night_flashes_the_alarm_photo_in_the_dark_only(firmware, peers, scenes, family):
    tg = peers.telegram()
    dev = firmware(peers.config(telegram=tg, camera={'framesize': 'QVGA', 'flash': 'night'},
                                alarm={'event_gap_s': 0}),
                   env=env(family), camera={'folder': scenes['dark'], 'lit': scenes['lit']})
    assert dev.admin('alarm_test')[0] == 200
    wait(lambda: tg.photos, 20, 'the test alarm photo at the fake Telegram')
    assert mean(tg.photos[-1]['jpeg']) > 35, 'lit in the dark'
    assert led(dev)['lit'] == 1 and led(dev)['duty_u16'] == 0

    dev.board.control('camera', folder=scenes['day'])
    time.sleep(0.5)
    assert dev.admin('alarm_test')[0] == 200
    wait(lambda: len(tg.photos) >= 2, 20, 'the daylight photo')
    assert mean(tg.photos[-1]['jpeg']) > 100
    assert led(dev)['lit'] == 1, 'no flash in daylight'


@pytest.mark.parametrize('family', FAMILIES)
def test_flash_is_no_motion(firmware, scenes, family):
    """Photos flashed while armed, and the LED lighting the scene for a viewer, raise no alarm:
    the detector skips the frames the flash dazzles and relearns a scene the LED now lights."""
    dev = firmware({'camera': {'framesize': 'QVGA', 'flash': 'always', 'flash_stream': 'always'},
                    'alarm': {'min_frames': 1, 'event_gap_s': 0}},
                   env=env(family), camera={'folder': scenes['dark'], 'lit': scenes['lit']})
    assert control(dev, 'led_intensity', 255)[0] == 200     # armed, /control wants a login
    assert dev.admin('arm')[0] == 200
    wait(lambda: dev.status()['alarm']['frames_checked'] >= 10, 20, 'the detector learnt the room')
    for _ in range(3):
        code, _, photo = dev.get('control', '/capture')
        assert code == 200 and mean(photo) > 35
        time.sleep(0.3)
    v = MjpegReader(dev.ports['stream'])
    try:
        v.frame()
        start = dev.status()['alarm']['frames_checked']
        wait(lambda: dev.status()['alarm']['frames_checked'] >= start + 10, 20, 'lit frames checked')
    finally:
        v.close()
    wait(lambda: led(dev).get('duty_u16') == 0, 10, 'dark again')
    start = dev.status()['alarm']['frames_checked']
    wait(lambda: dev.status()['alarm']['frames_checked'] >= start + 10, 20, 'dark frames checked')
    a = dev.status()['alarm']
    assert a['alarms'] == 0 and a['flash_skipped'] > 0, a
    assert led(dev)['lit'] == 4, led(dev)


@pytest.mark.parametrize('family', FAMILIES)
def test_night_flashes_the_photo_of_a_motion_alarm(firmware, peers, scenes, family):
    """The alarm's own photo (Telegram, MQTT, the admin page) is a fresh frame lit by the flash
    when the detector's frame is dark; the flash then raises no second alarm."""
    tg = peers.telegram()
    dev = firmware(peers.config(telegram=tg, camera={'framesize': 'QVGA', 'flash': 'night'},
                                alarm={'event_gap_s': 0}),
                   env=env(family), camera={'folder': scenes['dark'], 'lit': scenes['lit']})
    assert dev.admin('arm')[0] == 200
    wait(lambda: dev.status()['alarm']['frames_checked'] >= 10, 20, 'the detector learnt the room')
    t0 = time.monotonic()
    dev.board.control('camera', folder=scenes['dark_motion'])
    wait(lambda: tg.photos, 20, 'the alarm photo at the fake Telegram')
    dev.board.control('camera', folder=scenes['dark'])
    assert mean(tg.photos[0]['jpeg']) > 35, 'the alarm photo is lit'
    assert time.monotonic() - t0 < 10
    assert led(dev)['lit'] >= 1
    assert dev.status()['flash']['flashes'] >= 1


# --- the stand-in --------------------------------------------------------------------------------

def test_pwm_stand_in_is_as_strict_as_the_port(tmp_path):
    """machine.PWM refuses what ports/esp32/machine_pwm.c refuses, keeps the duty at the timer's
    resolution and records the LED."""
    (tmp_path / '.sim').mkdir()
    (tmp_path / 't.py').write_text(textwrap.dedent("""
        import json, machine
        def R(*a): print('R ' + json.dumps(list(a)))
        def err(f):
            try:
                f()
            except Exception as e:
                return type(e).__name__ + ': ' + str(e)
        R('pin', err(lambda: machine.PWM(machine.Pin(36))), err(lambda: machine.PWM(6)))
        R('two', err(lambda: machine.PWM(machine.Pin(4), duty=1, duty_u16=1)))
        R('freq', err(lambda: machine.PWM(machine.Pin(4), freq=0)))
        half = machine.PWM(machine.Pin(2))
        R('half', half.duty_u16())
        p = machine.PWM(machine.Pin(4), freq=5000, duty_u16=0)
        R('dark', p.duty_u16(), p.freq())
        R('range', err(lambda: p.duty_u16(65536)), err(lambda: p.duty_u16(-1)))
        p.duty_u16(128 * 257)
        R('lit', p.duty_u16())
        p.deinit()
        R('deinit', err(lambda: p.duty_u16()), err(lambda: p.duty_u16(1)))
    """))
    env = dict(os.environ, MICROPYPATH=os.path.join(ROOT, 'tools', 'sim', 'board') + ':.frozen',
               ESP32SIM=str(tmp_path / '.sim'))
    r = subprocess.run([simulate.micropython_bin(), 't.py'], cwd=str(tmp_path), env=env,
                       capture_output=True, timeout=20)
    assert r.returncode == 0, r.stdout + r.stderr
    res = {x[0]: x[1:] for x in (json.loads(line[2:]) for line in r.stdout.decode().splitlines()
                                 if line.startswith('R '))}
    assert res['pin'] == ['ValueError: PWM not supported on Pin(36)', 'ValueError: invalid pin']
    assert 'only one of' in res['two'][0]
    assert res['freq'] == ['ValueError: frequency must be from 1Hz to 40MHz']
    assert res['half'] == [32768], 'no duty given: the port starts at 50 %'
    assert res['dark'] == [0, 5000]
    assert res['range'] == ['ValueError: duty_u16 must be from 0 to 65535'] * 2
    assert res['lit'] == [128 * 257 // 8 * 8], '13 bits at 5 kHz'
    assert res['deinit'] == ['RuntimeError: PWM inactive'] * 2
    st = json.loads((tmp_path / '.sim' / 'pwm4.json').read_text())
    assert st['lit'] == 1 and st['duty_u16'] == 0 and st['freq'] == 5000


LIT_FAILS = r'''
import asyncio, time
from firmware.camera.flash import Flash
from firmware.camera.service import CameraService
from firmware.core.log import Log

class Cfg:
    framesize = 'QVGA'; quality = 12; vflip = hmirror = brightness = contrast = saturation = 0
    special_effect = wb_mode = 0; xclk_mhz = 10; max_fps = 25; reboot_after_failures = 0
    format = 'JPEG'; flash = 'always'; flash_intensity = 255; flash_stream = 'disarmed'
    flash_stream_max = 255

class Pwm:
    duty = 0
    def duty_u16(self, d):
        self.duty = d

pwm = Pwm()

class Drv:
    JPEG = 4; PSRAM = 0; XCLK_10MHz = 10; XCLK_20MHz = 20; FRAME_QVGA = 5
    def init(self, *a, **k): return True
    def deinit(self): return True
    def capture(self):
        time.sleep_ms(20)
        return False if pwm.duty else b'\xff\xd8 unlit'   # no frame comes while the LED is lit
    def __getattr__(self, name):
        if name == 'SETTERS':
            raise AttributeError(name)
        return lambda *a: None

async def main():
    cam = CameraService(Drv(), Cfg(), Log(20), flash=Flash(pwm, Cfg()))
    t = asyncio.create_task(cam.run())
    frame = await cam.snapshot()
    print('RESULT', frame, pwm.duty, cam.flash.flashes)
    t.cancel()

asyncio.run(main())
'''


def test_a_photo_whose_lit_frame_never_comes_goes_without_flash(tmp_path):
    """The lit frame is waited for at most flash.WAIT_MS; then the photo is taken unlit and the
    LED is off again (here the camera delivers nothing while the LED is lit)."""
    script = tmp_path / 'script.py'
    script.write_text(LIT_FAILS)
    r = subprocess.run([simulate.micropython_bin(), str(script)], cwd=str(tmp_path),
                       capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, MICROPYPATH=':'.join(['.frozen', ROOT])))
    line = [x for x in r.stdout.splitlines() if x.startswith('RESULT')]
    assert line == ["RESULT b'\\xff\\xd8 unlit' 0 1"], r.stdout + r.stderr
    assert 'flash: no frame within 1000 ms: the photo is taken without' in r.stdout
