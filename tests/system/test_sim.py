"""The simulator's stand-ins (camera, network, machine, esp32) on the real MicroPython VM,
and the runner (tools/sim/simulate.py Board). Every wait is bounded."""
import io
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
from PIL import Image
from testkit.paths import ROOT as REPO

from sim import (
    scene,  # noqa: E402
    simulate,  # noqa: E402
)

MP = simulate.micropython_bin()
SIM = os.path.join(REPO, "tools", "sim", "board")


@pytest.fixture(scope="session")
def frames(tmp_path_factory):
    d = os.path.join(REPO, "sim", "frames")
    if all(os.path.exists(os.path.join(d, s, ".complete")) for s in ("160x120", "320x240", "640x480")):
        return d
    d = str(tmp_path_factory.mktemp("frames"))
    scene.generate(d, sizes=["QQVGA", "QVGA", "VGA"], verbose=False)
    return d


@pytest.fixture
def flash(tmp_path):
    f = tmp_path / "flash"
    (f / ".sim").mkdir(parents=True)
    return f


def run_vm(flash, code, frames=None, timeout=20, heapsize="512K", env=None, script=None):
    """Run a MicroPython snippet with the stand-ins on the path, cwd = flash."""
    p = flash / "_t.py"
    p.write_text(textwrap.dedent(code))
    e = dict(os.environ)
    e["MICROPYPATH"] = SIM + ":.frozen"
    e["ESP32SIM"] = str(flash / ".sim")
    if frames:
        e["SIMFRAMES"] = frames
    e.update(env or {})
    r = subprocess.run([MP, "-X", "heapsize=" + heapsize, script or str(p)], cwd=str(flash),
                       env=e, capture_output=True, timeout=timeout)
    return r


def results(r):
    """Lines 'R <json>' printed by the snippet."""
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    return [json.loads(line[2:]) for line in out.splitlines() if line.startswith("R ")]


def control(flash, name, data):
    simulate.write_control(str(flash / ".sim"), name, data)


def read(flash, name):
    return json.loads((flash / ".sim" / name).read_text())


# -- camera ----------------------------------------------------------------------------

def test_camera_semantics(flash, frames):
    r = run_vm(flash, """
        import camera, json
        def R(*a): print("R " + json.dumps(list(a)))
        R("setters-uninit", camera.framesize(camera.FRAME_QVGA), camera.quality(10), camera.flip(1))
        R("capture-uninit", camera.capture())
        R("init", camera.init(0, format=camera.JPEG, framesize=camera.FRAME_QVGA, fb_location=camera.PSRAM))
        try:
            camera.init(0, format=camera.JPEG)
            R("double", "no error")
        except OSError as e:
            R("double", str(e))
        b = camera.capture()
        R("capture", type(b).__name__, b[:2] == b"\\xff\\xd8", b[-2:] == b"\\xff\\xd9")
        R("setters", camera.quality(12), camera.flip(0), camera.mirror(1), camera.contrast(9),
          camera.brightness(-1), camera.saturation(0), camera.speffect(2), camera.whitebalance(1))
        R("deinit", camera.deinit(), camera.capture(), camera.deinit())
        for kw in ({"format": 99}, {"framesize": 99}, {"xclk_freq": 5}):
            try:
                camera.init(0, **kw)
                R("bad", "accepted")
            except ValueError as e:
                R("bad", str(e))
        R("init-again", camera.init(0, format=camera.JPEG, framesize=camera.FRAME_QQVGA))
    """, frames)
    res = {x[0]: x[1:] for x in results(r)}
    assert res["setters-uninit"] == [False, False, False]
    assert res["capture-uninit"] == [False]
    assert res["init"] == [True]
    assert res["double"] == ["Camera Init Failed"]
    assert res["capture"] == ["bytes", True, True]
    assert res["setters"] == [None] * 8
    assert res["deinit"] == [True, False, False]
    assert res["init-again"] == [True]
    bad = [x[1] for x in results(r) if x[0] == "bad"]
    assert bad == ["Image format is not valid", "Image framesize is not valid",
                   "xclk frequency is not valid"]
    st = read(flash, "camera_stats.json")
    assert st["inits"] == 3 and st["deinits"] == 2 and st["captures"] == 1


def test_framesize_changes_jpeg_dimensions(flash, frames):
    r = run_vm(flash, """
        import camera
        camera.init(0, format=camera.JPEG, framesize=camera.FRAME_QVGA)
        open("a.jpg", "wb").write(camera.capture())
        camera.framesize(camera.FRAME_VGA)
        open("b.jpg", "wb").write(camera.capture())
        camera.framesize(camera.FRAME_QQVGA)
        open("c.jpg", "wb").write(camera.capture())
    """, frames)
    assert r.returncode == 0, r.stdout + r.stderr
    sizes = [Image.open(flash / n).size for n in ("a.jpg", "b.jpg", "c.jpg")]
    assert sizes == [(320, 240), (640, 480), (160, 120)]


def test_fault_control_fail_init_and_capture(flash, frames):
    control(flash, "camera.json", {"fail_init": 1, "fail_capture": 2})
    r = run_vm(flash, """
        import camera, json
        def R(*a): print("R " + json.dumps(list(a)))
        try:
            camera.init(0, framesize=camera.FRAME_QVGA)
            R("init1", "ok")
        except OSError as e:
            R("init1", str(e))
        R("init2", camera.init(0, framesize=camera.FRAME_QVGA))
        R("caps", [type(camera.capture()).__name__ for i in range(4)])
        camera.deinit()
    """, frames)
    res = {x[0]: x[1] for x in results(r)}
    assert res["init1"] == "Camera Init Failed"
    assert res["init2"] is True
    assert res["caps"] == ["bool", "bool", "bytes", "bytes"]
    ctl = read(flash, "camera.json")
    assert ctl["fail_init"] == 0 and ctl["fail_capture"] == 0
    st = read(flash, "camera_stats.json")
    assert st == {"captures": 2, "inits": 2, "deinits": 1, "failed": 2}


def test_fail_capture_forever_and_motion_frames(flash, frames):
    control(flash, "camera.json", {"fail_capture": -1})
    r = run_vm(flash, """
        import camera, json, time
        def R(*a): print("R " + json.dumps(list(a)))
        camera.init(0, framesize=camera.FRAME_QQVGA)
        R("fail", [camera.capture() for i in range(3)])
        f = open(".sim/camera.json", "w"); f.write('{"motion": true}'); f.close()
        time.sleep_ms(150)
        open("m.jpg", "wb").write(camera.capture())
        f = open(".sim/camera.json", "w"); f.write('{"motion": false}'); f.close()
        time.sleep_ms(150)
        open("s.jpg", "wb").write(camera.capture())
    """, frames)
    res = {x[0]: x[1] for x in results(r)}
    assert res["fail"] == [False, False, False]
    assert read(flash, "camera.json")["motion"] is False
    m = (flash / "m.jpg").read_bytes()
    s = (flash / "s.jpg").read_bytes()
    motion_dir = os.path.join(frames, "160x120", "motion")
    still_dir = os.path.join(frames, "160x120", "still")
    assert any(open(os.path.join(motion_dir, n), "rb").read() == m for n in os.listdir(motion_dir))
    assert any(open(os.path.join(still_dir, n), "rb").read() == s for n in os.listdir(still_dir))


def test_capture_paced_at_sensor_rate(flash, frames):
    control(flash, "camera.json", {"fps": 25})
    r = run_vm(flash, """
        import camera, time, json
        camera.init(0, framesize=camera.FRAME_QVGA)
        camera.capture()
        t = time.ticks_ms()
        for i in range(10):
            assert camera.capture()
        print("R " + json.dumps(time.ticks_diff(time.ticks_ms(), t)))
    """, frames)
    (ms,) = results(r)
    assert ms >= 300  # 10 frames at 25 fps = 400 ms


def test_user_folder_and_grayscale(flash, frames, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    for i, c in enumerate(((255, 0, 0), (0, 0, 255))):
        Image.new("RGB", (64, 48), c).save(folder / ("%d.jpg" % i))
    control(flash, "camera.json", {"folder": str(folder)})
    r = run_vm(flash, """
        import camera, json
        def R(*a): print("R " + json.dumps(list(a)))
        camera.init(0, framesize=camera.FRAME_UXGA)
        for i in range(3):
            open("f%d.jpg" % i, "wb").write(camera.capture())
        camera.deinit()
        f = open(".sim/camera.json", "w"); f.write("{}"); f.close()
        camera.init(0, format=camera.GRAYSCALE, framesize=camera.FRAME_QQVGA)
        R("gray", len(camera.capture()))
        camera.deinit()
        try:
            camera.init(0, format=camera.GRAYSCALE, framesize=camera.FRAME_VGA)
            R("grayvga", "ok")
        except ValueError:
            R("grayvga", "ValueError")
    """, frames)
    res = {x[0]: x[1] for x in results(r)}
    assert res["gray"] == 160 * 120
    assert res["grayvga"] == "ValueError"
    a, b, c = ((flash / ("f%d.jpg" % i)).read_bytes() for i in range(3))
    assert a == (folder / "0.jpg").read_bytes() and b == (folder / "1.jpg").read_bytes() and c == a


# -- network ---------------------------------------------------------------------------

NET_HELPERS = """
    import network, time, json
    def R(*a): print("R " + json.dumps(list(a)))
    def wait(w, pred, ms=3000):
        t = time.ticks_ms()
        while not pred() and time.ticks_diff(time.ticks_ms(), t) < ms:
            time.sleep_ms(20)
        return pred()
    def air(d):
        f = open(".sim/air.json", "w"); f.write(json.dumps(d)); f.close()
"""


def test_network_connect_ok_wrong_password_no_ap_and_drop(flash):
    control(flash, "air.json", {"aps": [{"ssid": "home", "password": "secret123", "rssi": -61,
                                         "up": True, "channel": 6}],
                                "connect_delay_ms": 100, "scan_ms": 0})
    r = run_vm(flash, NET_HELPERS + """
    w = network.WLAN(network.STA_IF)
    try:
        w.connect("home", "secret123")
        R("inactive", "no error")
    except OSError as e:
        R("inactive", str(e))
    w.active(True)
    R("idle", w.status(), w.isconnected(), w is network.WLAN(network.STA_IF))
    R("scan", [(s[0].decode(), s[2], s[3], s[4], len(s[1])) for s in w.scan()])
    w.connect("home", "secret123")
    R("connecting", w.status())
    try:
        w.connect("home", "secret123")
        R("twice", "no error")
    except OSError as e:
        R("twice", str(e))
    R("ok", wait(w, w.isconnected), w.status(), w.status("rssi"), w.ipconfig("addr4"),
      w.ifconfig()[0], w.config("ssid"))
    air({"aps": [{"ssid": "home", "password": "secret123", "up": False}], "connect_delay_ms": 100})
    R("drop", wait(w, lambda: not w.isconnected()), w.status())
    R("noap", wait(w, lambda: w.status() == network.STAT_NO_AP_FOUND))
    w.disconnect()
    R("disc", w.status())
    air({"aps": [{"ssid": "home", "password": "secret123", "up": True}], "connect_delay_ms": 100})
    time.sleep_ms(150)
    w.connect("home", "wrong-pass")
    R("wrong", wait(w, lambda: w.status() == network.STAT_WRONG_PASSWORD), w.isconnected())
    w.disconnect()
    w.connect("nowhere", "x")
    R("absent", wait(w, lambda: w.status() == network.STAT_NO_AP_FOUND), w.isconnected())
    """)
    res = {x[0]: x[1:] for x in results(r)}
    assert res["inactive"] == ["Wifi Not Started"]
    assert res["idle"] == [1000, False, True]
    assert res["scan"] == [[["home", 6, -61, 3, 6]]]
    assert res["connecting"] == [1001]
    assert res["twice"] == ["Wifi Internal Error"]
    assert res["ok"] == [True, 1010, -61, ["127.0.0.1", "255.0.0.0"], "127.0.0.1", "home"]
    # as the ESP32 port: reason 200 (beacon timeout) reads as STAT_CONNECTING while it reconnects
    assert res["drop"] == [True, 1001]
    assert res["noap"] == [True]
    assert res["disc"] == [1000]
    assert res["wrong"] == [True, False]
    assert res["absent"] == [True, False]


def test_network_ap_recorded_and_constants(flash):
    r = run_vm(flash, NET_HELPERS + """
    ap = network.WLAN(network.AP_IF)
    ap.active(True)
    try:
        ap.config(ssid="cam", security=3, key="short")
        R("short", "accepted")
    except OSError as e:
        R("short", str(e))
    ap.config(ssid="cam-setup", security=network.AUTH_WPA2_PSK, key="longenough", max_clients=2)
    R("get", ap.config("ssid"), ap.config("security"), ap.config("max_clients"), ap.isconnected(),
      ap.status(), ap.ipconfig("addr4"))
    try:
        ap.config(reconnects=2)
        R("reconnects", "accepted")
    except OSError as e:
        R("reconnects", str(e))
    try:
        ap.config("nonsense")
    except ValueError as e:
        R("unknown", str(e))
    R("consts", network.STAT_IDLE, network.STAT_CONNECTING, network.STAT_GOT_IP,
      network.STAT_NO_AP_FOUND, network.STAT_WRONG_PASSWORD, network.STAT_BEACON_TIMEOUT,
      network.STAT_ASSOC_FAIL, network.STAT_HANDSHAKE_TIMEOUT, network.STA_IF, network.AP_IF)
    network.hostname("alarmcam")
    R("host", network.hostname(), len(network.WLAN(network.STA_IF).config("mac")))
    """)
    res = {x[0]: x[1:] for x in results(r)}
    assert res["short"] == ["Wifi Invalid Password"]
    assert res["get"] == ["cam-setup", 3, 2, False, None, ["127.0.0.1", "255.0.0.0"]]
    assert res["reconnects"] == ["STA required"]
    assert res["unknown"] == ["unknown config param"]
    assert res["consts"] == [1000, 1001, 1010, 201, 202, 200, 203, 204, 0, 1]
    assert res["host"] == ["alarmcam", 6]
    w = read(flash, "wlan.json")
    assert w["ap"]["active"] is True and w["ap"]["ssid"] == "cam-setup"
    assert w["ap"]["security"] == 3 and w["hostname"] == "alarmcam"


# -- machine / esp32 -------------------------------------------------------------------

def test_machine_and_esp32_basics(flash):
    r = run_vm(flash, """
        import machine, esp32, json
        def R(*a): print("R " + json.dumps(list(a)))
        R("consts", machine.PWRON_RESET, machine.HARD_RESET, machine.WDT_RESET,
          machine.DEEPSLEEP_RESET, machine.SOFT_RESET)
        R("cause", machine.reset_cause())
        led = machine.Pin(4, machine.Pin.OUT)
        led.on(); a = led.value(); led.off()
        R("pin", a, led.value(), len(machine.unique_id()), machine.freq())
        h = esp32.idf_heap_info(esp32.HEAP_DATA)
        R("heap", len(h), len(h[0]), h[0][0] >= h[0][1] > 0)
        try:
            machine.WDT(timeout=0)
        except ValueError as e:
            R("wdt0", str(e))
    """, env={"ESP32SIM_RESET_CAUSE": "4"})
    res = {x[0]: x[1:] for x in results(r)}
    assert res["consts"] == [1, 2, 3, 4, 5]
    assert res["cause"] == [4]
    assert res["pin"] == [1, 0, 6, 160000000]
    assert res["heap"] == [3, 4, True] or res["heap"] == [1, 4, True]
    assert res["wdt0"] == ["WDT timeout too short"]


def _fake_main(tmp_path, code):
    d = tmp_path / "fw"
    d.mkdir(exist_ok=True)
    (d / "main.py").write_text(textwrap.dedent(code))
    return d


def test_reset_from_asyncio_task_ends_vm_without_board(flash):
    r = run_vm(flash, """
        import asyncio, machine
        async def t():
            await asyncio.sleep_ms(20)
            machine.reset()
        async def m():
            asyncio.create_task(t())
            try:
                await asyncio.sleep(2)
            except Exception:
                pass
            print("not reached")
        asyncio.run(m())
        print("not reached either")
    """)
    assert r.returncode == simulate.EXIT_RESET
    assert b"not reached" not in r.stdout
    assert read(flash, "reset_cause")["cause"] == 2


def test_wdt_kills_hung_vm_under_board(flash, tmp_path):
    fw = _fake_main(tmp_path, """
        import machine, time
        wdt = machine.WDT(timeout=300)
        for i in range(5):
            time.sleep_ms(100)
            wdt.feed()
        print("hanging")
        while True:
            pass
    """)
    e = dict(os.environ, MICROPYPATH=SIM + ":.frozen:" + str(fw), ESP32SIM=str(flash / ".sim"))
    t = time.time()
    r = subprocess.run([MP, os.path.join(SIM, "power_on.py")], cwd=str(flash), env=e,
                       capture_output=True, timeout=20)
    assert r.returncode == simulate.EXIT_WDT, r.stdout + r.stderr
    assert b"hanging" in r.stdout
    assert time.time() - t < 10
    assert read(flash, "reset_cause") == {"cause": 3, "exit_code": 22}


def test_wdt_fallback_without_board(flash):
    r = run_vm(flash, """
        import machine
        machine.WDT(timeout=200)
        while True:
            pass
    """)
    assert r.returncode in (-9, 137)
    assert read(flash, "reset_cause") == {"cause": 3, "exit_code": 22}


def test_board_restarts_after_reset_and_deepsleep(flash, tmp_path):
    fw = _fake_main(tmp_path, """
        import machine, asyncio
        c = machine.reset_cause()
        print("boot cause", c, __name__)
        async def later(f, *a):
            await asyncio.sleep_ms(10)
            f(*a)
        if c == machine.PWRON_RESET:
            asyncio.run(later(machine.reset))
        elif c == machine.HARD_RESET:
            machine.deepsleep(200)
        elif c == machine.DEEPSLEEP_RESET:
            wdt = machine.WDT(timeout=200)
            while True:
                pass
        print("done")
    """)
    b = simulate.Board(str(flash), env={"MICROPYPATH": SIM + ":.frozen:" + str(fw)}, once=False)
    b.start()
    try:
        assert b.wait_for(lambda x: len(x.exit_codes) >= 4, timeout=15)
        assert b.wait_exit(5)
    finally:
        b.stop()
    assert b.exit_codes == [20, 21, 22, 0]
    assert b.causes == [1, 2, 4, 3]
    log = b.console()
    assert "boot cause 3 __main__" in log and "done" in log
    assert os.path.exists(flash / "config.json")  # copied from tools/sim/board/config.sim.json


def test_board_once_and_hard_reset(flash, tmp_path):
    fw = _fake_main(tmp_path, """
        import machine, time
        print("up", machine.reset_cause())
        time.sleep(30)
    """)
    b = simulate.Board(str(flash), env={"MICROPYPATH": SIM + ":.frozen:" + str(fw)})
    b.start()
    try:
        assert b.wait_for(lambda x: "up 1" in x.console(), timeout=10)
        b.hard_reset()
        assert b.wait_for(lambda x: "up 2" in x.console(), timeout=10)
        assert b.boots == 2
    finally:
        b.stop()
    assert not b.running


# -- scene -----------------------------------------------------------------------------

def test_scene_render_api_and_frames(frames):
    a = scene.render(320, 240, objects=scene.crossing(0.5), seed=1)
    b = scene.render(320, 240, seed=1)
    c = scene.render(320, 240, seed=2)
    assert a.size == (320, 240) and a.mode == "RGB"
    assert a.tobytes() != b.tobytes() and b.tobytes() != c.tobytes()
    sq = scene.render(96, 96)
    assert sq.size == (96, 96)
    im = Image.open(io.BytesIO(scene.encode_jpeg(b)))
    from PIL import JpegImagePlugin
    assert JpegImagePlugin.get_sampling(im) == 2  # 4:2:0
    f = os.path.join(frames, "640x480", "still")
    names = sorted(n for n in os.listdir(f) if n.endswith(".jpg"))
    assert len(names) >= 4
    assert open(os.path.join(f, names[0]), "rb").read() != open(os.path.join(f, names[1]), "rb").read()
