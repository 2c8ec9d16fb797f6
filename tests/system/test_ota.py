"""Update over the air on the simulator: the firmware runs from the simulated flash (the compiled
tree as `make deploy` lays it down), so the slots an update writes are what boots next.
"""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from sim.simulate import SIM
from testkit.paths import ROOT


def _load_bundle():
    import importlib.util
    spec = importlib.util.spec_from_file_location('bundle', os.path.join(ROOT, 'tools', 'build', 'bundle.py'))
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


bundle = _load_bundle()   # tools/build/bundle.py (a script folder, not a package)

KEY = 'test-update-key-0123456789'
BUILD = os.path.join(ROOT, 'build', 'x64')
# The VM finds boot.py, main.py, firmware/ and lib/ on the flash, as a board does.
ENV = {'MICROPYPATH': SIM + ':.:.frozen:lib'}


@pytest.fixture
def board(firmware, tmp_path, make_build):
    make_build()

    def start(confirm_s=20, overrides=None, **kw):
        flash = tmp_path / 'flash'
        flash.mkdir(exist_ok=True)
        for name in ('firmware', 'lib'):
            shutil.copytree(os.path.join(BUILD, name), flash / name, dirs_exist_ok=True)
        for name in ('boot.py', 'main.py'):
            shutil.copyfile(os.path.join(ROOT, name), flash / name)
        cfg = {'update': {'key': KEY, 'confirm_s': confirm_s}}
        cfg.update(overrides or {})
        return firmware(cfg, env=ENV, **kw)
    return start


def flash_files(dev):
    """{path: bytes} of everything the firmware keeps on the flash (not the simulator's files)."""
    out = {}
    for d, dirs, names in os.walk(dev.flash):
        dirs[:] = [n for n in dirs if n != '.sim']
        for n in names:
            p = os.path.join(d, n)
            rel = os.path.relpath(p, dev.flash)
            if rel in ('console.log', 'reset_note.json') or rel.endswith('.tmp'):
                continue
            with open(p, 'rb') as f:
                out[rel] = f.read()
    return out


def post(dev, data):
    from conftest import ADMIN
    code, _, body = dev.get('admin', '/update', auth=ADMIN, data=data, timeout=60,
                            headers={'Content-Type': 'application/octet-stream'})
    return code, body.decode()


def wait_status(dev, pred, timeout=60):
    end = time.time() + timeout
    last = None
    while time.time() < end:
        try:
            last = dev.status()
            if pred(last):
                return last
        except (OSError, AssertionError):
            pass
        time.sleep(0.3)
    raise AssertionError('status never matched; last %r\n%s' % (
        last and last.get('update'), dev.console()[-3000:]))


def test_bundle_installs_with_make_ota_and_the_board_comes_back_on_the_new_version(board, tmp_path):
    dev = board()
    assert dev.status()['version'] == bundle.source_version()
    cfg = tmp_path / 'owner-config.json'
    cfg.write_text(json.dumps(dev.cfg))
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'build', 'ota.py'),
                        '--host', '127.0.0.1:%d' % dev.ports['admin'], '--config', str(cfg),
                        '--build', 'build/x64', '--march', 'x64', '--version', '9.9.1-new',
                        '--wait', '60'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr + dev.console()[-3000:]
    assert 'sent 100%' in r.stdout
    print(r.stdout)
    assert 'the board runs version 9.9.1-new' in r.stdout
    assert 'update confirmed' in r.stdout
    s = dev.status()
    assert s['version'] == '9.9.1-new' and s['update']['slot'] == 'slots/a'
    assert s['update']['previous_version'] is None and not s['update']['trial']
    assert dev.board.boots == 2
    st = json.loads((dev.flash / 'ota.json').read_text())
    assert st['active'] == 'slots/a' and st['previous'] == '' and not st['trial']
    # the previous version stays on the flash
    assert (dev.flash / 'firmware' / 'app.mpy').exists()


def _bad_bundles(tmp_path):
    files = bundle.tree(BUILD)
    mp, mpy = bundle.target('x64')
    good = bundle.pack(files, KEY, '9.9.2', mp, mpy)
    head = good.index(b'\n') + 1
    n = int(good[6:head - 1])
    flipped_file = bytearray(good)
    flipped_file[-10] ^= 0x55
    flipped_manifest = bytearray(good)
    flipped_manifest[head + 20] ^= 0x01
    huge = dict(files)
    huge['firmware/www/huge.bin'] = b'x' * 10
    big = bundle.pack(huge, KEY, '9.9.2', mp, mpy)
    # the manifest claims a file larger than the flash; the body stops after the manifest
    m = json.loads(big[head:big.index(b'\n') + 1 + int(big[6:big.index(b'\n')])])
    free = shutil.disk_usage(str(tmp_path)).free
    for f in m['files']:
        if f[0] == 'firmware/www/huge.bin':
            f[1] = 2 * free + (1 << 30)
    import hashlib
    import hmac
    raw = json.dumps(m).encode()
    too_big = b'ECAB1 %d\n' % len(raw) + raw + hmac.new(KEY.encode(), raw, hashlib.sha256).digest()
    return {
        'other MicroPython': (bundle.pack(files, KEY, '9.9.2', '1.22.0', mpy), 'built for MicroPython 1.22.0'),
        'other mpy ABI': (bundle.pack(files, KEY, '9.9.2', mp, mpy ^ (3 << 10)), 'mpy ABI'),
        'corrupted file': (bytes(flipped_file), 'corrupted: '),
        'corrupted manifest': (bytes(flipped_manifest), 'bad tag'),
        'truncated': (good[:-3000], 'truncated'),
        'cut in the manifest': (good[:head + n // 2], 'truncated'),
        'another key': (bundle.pack(files, 'someone-elses-key-000', '9.9.2', mp, mpy), 'bad tag'),
        'does not fit': (too_big, 'does not fit'),
        'not a bundle': (b'GIF89a' + b'\0' * 100, 'not an update bundle'),
    }


def test_each_kind_of_bad_bundle_is_refused_and_nothing_changes(board, tmp_path):
    dev = board()
    before = flash_files(dev)
    for kind, (data, why) in _bad_bundles(tmp_path).items():
        code, body = post(dev, data)
        assert code == 400 and why in body and 'nothing installed changed' in body, (kind, code, body)
        assert flash_files(dev) == before, kind
    s = dev.status()
    assert dev.board.boots == 1 and s['version'] == bundle.source_version()
    assert not (dev.flash / 'ota.json').exists()
    from conftest import ADMIN
    code, _, body = dev.get('admin', '/update', auth=ADMIN)
    u = json.loads(body)
    assert code == 200 and u['version'] == bundle.source_version() and u['enabled'] and not u['trial']


def test_update_needs_the_login_and_a_key(board, firmware):
    dev = board()
    code, _, _ = dev.get('admin', '/update', data=b'ECAB1 ')
    assert code == 401
    # no update.key (the default): no update over the air at all
    off = firmware(name='nokey')
    code, body = post(off, b'ECAB1 10\n')
    assert code == 403 and 'set update.key' in body


@pytest.fixture
def telegram(tmp_path):
    from peers import fake_telegram as ft
    pki = ft.make_ca(str(tmp_path / 'pki'))
    tg = ft.FakeTelegram([TOKEN], pki['cert'], pki['key']).start()
    tg.ca = pki['ca_der']
    yield tg
    tg.stop()


TOKEN = '123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw'


def test_a_version_that_never_reports_healthy_is_rolled_back(board, servers, telegram):
    import socket

    from testkit.helpers import free_port
    from testkit.vm.lfcp_harness import KEY as LFCP_KEY
    srv = servers.start()
    dev = board(confirm_s=20, overrides={
        'lfcp': {'key': LFCP_KEY, 'port': free_port(socket.SOCK_DGRAM), 'heartbeat_s': 1,
                 'servers': ['127.0.0.1:%d' % srv.port]},
        'telegram': {'api_url': telegram.url, 'ca_file': telegram.ca, 'token': TOKEN,
                     'chat_ids': [42], 'poll_s': 0}})
    # the new version crashes at start-up: boot.py's trial watchdog resets the board, and
    # boot.py starts the previous version again
    broken = bundle.compile_source("raise RuntimeError('broken build')\n", 'x64', 'firmware/app.py')
    data = bundle.make(BUILD, KEY, 'x64', '9.9.3-broken', {'firmware/app.mpy': broken})
    code, body = post(dev, data)
    assert code == 200, body
    s = wait_status(dev, lambda s: s['update'].get('rolled_back'), timeout=90)
    assert s['version'] == bundle.source_version()
    assert s['update']['rolled_back']['version'] == '9.9.3-broken'
    assert dev.board.boots >= 3
    assert dev.wait_console('broken build')
    assert any('update: 9.9.3-broken rolled back (not healthy within 20 s)' in line for line in s['log'])
    st = json.loads((dev.flash / 'ota.json').read_text())
    assert st['active'] == '' and not st['trial'] and st['reported']
    # and says so to the management servers (LFCP LOG) and to Telegram
    said = 'update: 9.9.3-broken rolled back (not healthy within 20 s): the previous version runs again'
    assert telegram.wait(lambda: any(said in m['text'] for m in telegram.messages), 30), telegram.messages
    name = dev.cfg['device']['name']

    def logged():
        d = srv.devices.get(name)
        return d is not None and any('E_update:_9.9.3-broken_rolled_back_(not_healthy_within_20_s)'
                                     in x['text'] for x in d.logs)
    end = time.time() + 30
    while time.time() < end and not servers.call(logged):
        time.sleep(0.2)
    assert servers.call(logged), servers.call(lambda: [x['text'] for x in srv.devices[name].logs] if name in srv.devices else list(srv.devices))


def test_a_version_that_runs_but_stays_unhealthy_is_rolled_back(board):
    dev = board(confirm_s=20)
    # in this version the camera task never reports progress: the trial's deadline resets
    app = open(os.path.join(ROOT, 'firmware', 'app.py')).read()
    assert "beat=lambda: sup.beat('camera')" in app
    sick = bundle.compile_source(app.replace("beat=lambda: sup.beat('camera')", 'beat=None'),
                                 'x64', 'firmware/app.py')
    data = bundle.make(BUILD, KEY, 'x64', '9.9.4-sick', {'firmware/app.mpy': sick})
    code, body = post(dev, data)
    assert code == 200, body
    s = wait_status(dev, lambda s: s['update'].get('rolled_back'), timeout=90)
    assert s['version'] == bundle.source_version()
    assert dev.wait_console('not healthy after 20 s (task camera makes no progress)')


@pytest.mark.timeout(300)
def test_power_cuts_at_every_write_of_an_install_leave_a_bootable_board(tmp_path):
    """On LittleFS in the VM (tools/testkit/vm/ota_powerloss.py): the power is cut at each block
    operation of an install, of boot.py's trial write and of its rollback write; after every cut
    boot.py must choose a slot holding one whole version."""
    files = {'firmware/app.py': b'VERSION = "new"\n' + b'#' * 6000 + b'\n',
             'firmware/version.py': b'VERSION = "new"\n', 'lib/microdot/microdot.py': b'# new\n'}
    mp, mpy = bundle.target('x64')
    path = tmp_path / 'new.bundle'
    path.write_bytes(bundle.pack(files, KEY, 'new', mp, mpy))
    vm = os.path.join(ROOT, '.venv', 'bin', 'micropython')
    env = dict(os.environ, MICROPYPATH='.frozen:' + ROOT + ':' + os.path.join(ROOT, 'tools', 'testkit', 'vm'))
    r = subprocess.run([vm, os.path.join(ROOT, 'tools', 'testkit', 'vm', 'ota_powerloss.py'),
                        str(path), os.path.join(ROOT, 'boot.py')],
                       capture_output=True, text=True, env=env, timeout=280)
    assert r.returncode == 0 and r.stdout.startswith('ok '), r.stdout[-2000:] + r.stderr[-2000:]
    counts = dict(kv.split('=') for kv in r.stdout.split()[1:])
    print(r.stdout)
    # the cuts really landed everywhere, and both outcomes happened
    assert int(counts['installs']) > 30 and int(counts['trial']) > 3 and int(counts['rollback']) > 3
    assert int(counts['old']) > 10 and int(counts['new']) > 3


def test_an_install_never_holds_the_bundle_in_memory(tmp_path, make_build):
    """A 200 KB bundle installs in a VM whose whole heap is 96 KB (the firmware precompiled, as
    on a board): it streams to the flash in 1 KB slices."""
    make_build()
    import random
    big = bytes(random.Random(1).getrandbits(8) for _ in range(200 * 1024))
    files = {'firmware/app.py': b'VERSION = "new"\n', 'firmware/www/big.bin': big}
    mp, mpy = bundle.target('x64')
    path = tmp_path / 'big.bundle'
    path.write_bytes(bundle.pack(files, KEY, 'new', mp, mpy))
    vm = os.path.join(ROOT, '.venv', 'bin', 'micropython')
    env = dict(os.environ, MICROPYPATH='.frozen:' + BUILD + ':' + os.path.join(ROOT, 'tools', 'testkit', 'vm'))
    r = subprocess.run([vm, '-X', 'heapsize=96K', os.path.join(ROOT, 'tools', 'testkit', 'vm', 'ota_powerloss.py'),
                        'heap', str(path), str(tmp_path / 'flash.img')],
                       capture_output=True, text=True, env=env, timeout=120)
    print(r.stdout)
    assert r.returncode == 0 and 'installed new' in r.stdout, r.stdout + r.stderr
    out = r.stdout.splitlines()[-1].split()
    assert int(out[3]) > 200 * 1024 and out[5] == 'new', r.stdout


@pytest.mark.timeout(180)
def test_a_bundle_uploaded_from_the_admin_page_installs(board, tmp_path):
    """The page's Update section, opened with the login in the URL, sends the file with XHR."""
    from conftest import ADMIN
    from testkit.browser import chromium, wait
    dev = board()
    path = tmp_path / 'page.bundle'
    path.write_bytes(bundle.make(BUILD, KEY, 'x64', '9.9.5-page'))
    drv = chromium(tmp_path)
    try:
        drv.get('http://%s:%s@127.0.0.1:%d/' % (ADMIN[0], ADMIN[1], dev.ports['admin']))
        wait(drv, "return document.querySelector('#t-update span').textContent.startsWith('%s')"
             % bundle.source_version())
        drv.find_element('id', 'bundle').send_keys(str(path))
        drv.execute_script("document.getElementById('send').click()")
        wait(drv, "return document.getElementById('upd').textContent.includes('installed 9.9.5-page')", 60)
    finally:
        drv.quit()
    s = wait_status(dev, lambda s: s['version'] == '9.9.5-page' and not s['update']['trial'], 90)
    assert s['update']['slot'] == 'slots/a'
