"""The simulator exposes the API set of the MicroPython release a board runs (SIM_MICROPYTHON,
docs/simulator.md "MicroPython versions"), and the whole firmware works on each supported one.

A tiny script on the simulated board proves the switch is real (WLAN.ipconfig is missing on
1.21, ...); then the firmware boots on each release with the camera families its images have
(micropython-camera-API's class API only from 1.24) and does what a user sees: a snapshot, a
stream frame, an alarm on motion, /open through a router, the SD card mounted.
"""
import ast
import json
import os
import subprocess
import sys

import pytest
from peers.fake_igd import FakeIGD  # noqa: E402
from testkit.helpers import MjpegReader
from testkit.paths import ROOT
from testkit.peers import alarm, frames_after, peers, wait  # noqa: F401  (peers is a fixture)

pytestmark = pytest.mark.timeout(90)
VM = os.path.join(ROOT, '.venv', 'bin', 'micropython')
BOARD = os.path.join(ROOT, 'tools', 'sim', 'board')
CARD_TOOL = os.path.join(ROOT, 'tools', 'testkit', 'vm', 'sdcard_image.py')

# What the script asks the board: one line of JSON.
PROBE = r'''
import json, network, machine, sys
facts = {'version': '%d.%d' % sys.implementation.version[:2]}
w = network.WLAN(network.STA_IF)
try:
    w.ipconfig('addr4')
    facts['wlan_ipconfig'] = True
except AttributeError:
    facts['wlan_ipconfig'] = False
facts['network_ipconfig'] = hasattr(network, 'ipconfig')
facts['IF_STA'] = hasattr(network.WLAN, 'IF_STA')
facts['STAT_CONNECT_FAIL'] = hasattr(network, 'STAT_CONNECT_FAIL')
try:
    import vfs
    facts['vfs'] = True
except ImportError:
    facts['vfs'] = False
import os
facts['os_mount'] = hasattr(os, 'mount') and hasattr(os, 'VfsFat')
import ssl
facts['load_verify_locations'] = hasattr(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT),
                                         'load_verify_locations')
card = machine.SDCard(slot=1, width=1)
facts['readblocks'] = repr(card.readblocks(0, bytearray(512)))
m = vfs if facts['vfs'] else os
m.mount(m.VfsFat(card), '/sd')
with open('/sd/hello.txt', 'w') as f:
    f.write('hi')
facts['card'] = sorted(os.listdir('/sd'))
import time
w.active(True)
w.connect('home', 'wrong-password')
time.sleep_ms(400)                  # the join has failed (connect_delay_ms 100); the driver retries
facts['status_failing'] = w.status()
w.disconnect()
facts['status_after_disconnect'] = w.status()
print('FACTS ' + json.dumps(facts))
'''

EXPECTED = {
    '1.21': dict(wlan_ipconfig=False, network_ipconfig=False, IF_STA=False,
                 STAT_CONNECT_FAIL=False, vfs=False, load_verify_locations=False,
                 readblocks='True', status_failing=1001, status_after_disconnect=8),
    '1.24': dict(wlan_ipconfig=True, network_ipconfig=True, IF_STA=True,
                 STAT_CONNECT_FAIL=False, vfs=True, load_verify_locations=True,
                 readblocks='True', status_failing=202, status_after_disconnect=1000),
    '1.29': dict(wlan_ipconfig=True, network_ipconfig=True, IF_STA=True,
                 STAT_CONNECT_FAIL=True, vfs=True, load_verify_locations=True,
                 readblocks='0', status_failing=202, status_after_disconnect=1000),
}
AIR = {'aps': [{'ssid': 'home', 'password': 'home-pass-1'}], 'connect_delay_ms': 100}


def make_card(sim, size_mb=8):
    sim.mkdir(parents=True, exist_ok=True)
    subprocess.run([VM, CARD_TOOL, 'mkfs', str(sim / 'sdcard.img'), str(size_mb)], check=True,
                   timeout=60)


def run_script(flash, env):
    """Run main.py on the simulated board (power_on.py, as a boot does); (exit code, output)."""
    e = dict(os.environ, MICROPYPATH=BOARD + ':.:.frozen', ESP32SIM=str(flash / '.sim'))
    e.pop('SIM_CAMERA', None)
    e.update(env)
    r = subprocess.run([VM, os.path.join(BOARD, 'power_on.py')], cwd=str(flash), env=e,
                       capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout + r.stderr


@pytest.mark.parametrize('version', sorted(EXPECTED))
def test_a_script_sees_the_api_set_of_the_chosen_version(tmp_path, version):
    flash = tmp_path / 'flash'
    make_card(flash / '.sim')
    (flash / '.sim' / 'air.json').write_text(json.dumps(AIR))
    (flash / 'main.py').write_text(PROBE)
    code, out = run_script(flash, {'SIM_MICROPYTHON': version})
    assert code == 0, out
    facts = json.loads(out.split('FACTS ', 1)[1].splitlines()[0])
    want = dict(EXPECTED[version], version=version, os_mount=True, card=['hello.txt'])
    assert facts == want, out


def test_wlan_ipconfig_is_an_attribute_error_on_1_21(tmp_path):
    flash = tmp_path / 'flash'
    flash.mkdir()
    (flash / 'main.py').write_text("import network\n"
                                   "network.WLAN(network.STA_IF).ipconfig('addr4')\n")
    code, out = run_script(flash, {'SIM_MICROPYTHON': '1.21'})
    assert code == 1 and "AttributeError: 'WLAN' object has no attribute 'ipconfig'" in out, out
    code, out = run_script(flash, {'SIM_MICROPYTHON': '1.24'})
    assert code == 0, out


@pytest.mark.parametrize('env, why', [
    ({'SIM_MICROPYTHON': '1.22'}, 'SIM_MICROPYTHON=1.22 is not a supported MicroPython version'),
    ({'SIM_MICROPYTHON': '1.21', 'SIM_CAMERA': 'class'},
     'micropython-camera-API has no image for MicroPython 1.21'),
])
def test_a_board_the_simulator_cannot_be_is_refused(tmp_path, env, why):
    flash = tmp_path / 'flash'
    flash.mkdir()
    (flash / 'main.py').write_text("print('firmware ran')\n")
    code, out = run_script(flash, env)
    assert code == 2 and why in out and 'firmware ran' not in out, out


# One boot per supported image: 1.21 has only micropython-camera-driver's images (functions);
# micropython-camera-API (class) ships from 1.24. `make test` / `make test-class` run everything
# else on 1.29 with the functions / the class.
@pytest.mark.parametrize('version, family', [
    ('1.21', 'functions'), ('1.24', 'functions'), ('1.24', 'class'), ('1.29', 'class'),
])
def test_the_firmware_works_on_each_version(firmware, tmp_path, version, family):
    make_card(tmp_path / 'flash' / '.sim')
    igd = FakeIGD().start()
    try:
        env = {'SIM_MICROPYTHON': version, 'SIM_CAMERA': 'class' if family == 'class' else ''}
        dev = firmware({'camera': {'framesize': 'QVGA'}, 'storage': {'sdcard': True},
                        'alarm': {'event_gap_s': 0, 'detect_fps': 5},
                        'upnp': {'ssdp': '127.0.0.1:%d' % igd.ssdp_port}}, env=env)
        st = dev.status()
        assert st['camera']['driver'] == family, st['camera']
        wait(lambda: dev.status()['card']['state'] == 'mounted', 20, 'the SD card mounted')

        code, hdr, body = dev.get('control', '/capture')
        assert code == 200 and body[:2] == b'\xff\xd8', (code, hdr)
        _, frame = MjpegReader(dev.ports['stream']).frame()
        assert frame[:2] == b'\xff\xd8'

        # /open finds the LAN address (ifconfig() on 1.21) and maps the port at the router
        wait(lambda: dev.status()['wifi']['state'] == 'connected', 20, 'the uplink')
        code, _, body = dev.admin('open')
        assert code == 200, body
        m = wait(lambda: igd.mapping(54321), 15, 'the port mapping at the router')
        assert m['client'] == '127.0.0.1', m

        assert dev.admin('arm')[0] == 200
        frames_after(dev, 3)
        dev.board.control('camera', motion=True)
        a = wait(lambda: (lambda a: a if a['alarms'] else None)(alarm(dev)), 20, 'an alarm')
        assert a['events'][0]['reason'] == 'motion', a
    finally:
        igd.stop()


# The stand-ins as the VM sees them under one version, against that version's stubs.
LIST = r'''
import json, sys
out = {}
for name in sys.argv[1:]:
    m = __import__(name)
    for k in dir(m):
        if k[0] == '_':
            continue
        v = getattr(m, k)
        if type(v) is type(sys):
            continue        # a module the stand-in imported
        out[name + '.' + k] = 1
        if isinstance(v, type):
            for a in dir(v):
                if a[0] != '_':
                    out[name + '.' + k + '.' + a] = 1
print(json.dumps(sorted(out)))
'''


def stub_names(version, module):
    """module.name and module.Class.member of the ESP32 stubs of `version`."""
    d = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'build', 'versions.py'),
                        'stubs', version], capture_output=True, text=True, check=True).stdout.strip()
    tree = ast.parse(open(os.path.join(d, module + '.pyi')).read())
    out = set()
    for n in tree.body:
        names = [n.name] if isinstance(n, (ast.FunctionDef, ast.ClassDef)) else \
            [t.id for t in (n.targets if isinstance(n, ast.Assign) else
                            [n.target] if isinstance(n, ast.AnnAssign) else [])
             if isinstance(t, ast.Name)]
        for name in names:
            out.add(module + '.' + name)
        if isinstance(n, ast.ClassDef):
            for m in n.body:
                for a in ([m.name] if isinstance(m, ast.FunctionDef) else
                          [t.id for t in (m.targets if isinstance(m, ast.Assign) else
                                          [m.target] if isinstance(m, ast.AnnAssign) else [])
                           if isinstance(t, ast.Name)]):
                    out.add('%s.%s.%s' % (module, n.name, a))
    return out


@pytest.mark.parametrize('version', sorted(EXPECTED))
def test_the_network_and_machine_stand_ins_have_only_what_that_version_has(tmp_path, version):
    """What the firmware could reach of network and machine under SIM_MICROPYTHON=version is in
    that version's ESP32 stubs (tests/unit/test_api_stubs.py checks the union of all versions)."""
    (tmp_path / 'list.py').write_text(LIST)
    e = dict(os.environ, MICROPYPATH=BOARD, ESP32SIM=str(tmp_path / '.sim'),
             SIM_MICROPYTHON=version)
    r = subprocess.run([VM, str(tmp_path / 'list.py'), 'network', 'machine'], cwd=str(tmp_path),
                       env=e, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    have = set(json.loads(r.stdout))
    real = stub_names(version, 'network') | stub_names(version, 'machine')
    assert sorted(have - real) == [], 'not in the %s stubs' % version


def test_a_build_for_1_29_refuses_to_arm_on_a_1_21_board(firmware, make_build):
    """The board's own version is what the firmware checks its native modules against: the
    simulated 1.21 board refuses the 1.29 build's viper modules at boot, as a board does, where
    the same build arms on 1.29 (tests/system/test_deploy.py)."""
    make_build()
    dev = firmware({'alarm': {'detect_fps': 2}}, mpy=True,
                   env={'SIM_MICROPYTHON': '1.21', 'SIM_CAMERA': ''})   # also under test-class
    code, _, body = dev.admin('arm')
    assert code == 503 and b'motion detection cannot load on MicroPython 1.21' in body, body
    assert dev.status()['alarm']['state'] == 'disarmed'


def test_a_photo_reaches_telegram_over_verified_tls_on_1_21(firmware, peers):
    """1.21's SSLContext has no load_verify_locations (1.22+): the firmware died at boot with
    Telegram configured. Its CA now goes with each socket (ssl.wrap_socket's cadata), and the
    fake Bot API's certificate is still verified against it."""
    tg = peers.telegram()
    dev = firmware(peers.config(telegram=tg), env={'SIM_MICROPYTHON': '1.21', 'SIM_CAMERA': ''})
    assert dev.status()['telegram']['configured'] is True
    assert dev.admin('photo')[0] == 200
    assert tg.wait(lambda: tg.photos, 30), dev.board.console()[-2000:]
    assert tg.photos[0]['jpeg'][:2] == b'\xff\xd8'
