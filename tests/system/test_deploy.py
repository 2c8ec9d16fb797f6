"""make build compiles for the ESP32; make deploy DRY_RUN=1 shows exactly what goes to the board."""
import os
import subprocess

from testkit.paths import ROOT


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
    assert head[0] == ord('M') and head[2] >> 2 == 10, head
    assert os.path.exists(os.path.join(out, 'firmware', 'web', 'www', 'control.html'))
    assert os.path.exists(os.path.join(out, 'lib', 'microdot', 'microdot.mpy'))


def test_deploy_dry_run_lists_the_mpremote_commands(make_build):
    with make_build.lock():  # deploy builds first
        r = subprocess.run(['make', '-s', 'deploy', 'DRY_RUN=1', 'PORT=/dev/ttyUSB7'], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [l for l in r.stdout.splitlines() if l.startswith('mpremote')]
    c = 'mpremote connect /dev/ttyUSB7 '
    expected = [c + 'fs cp -r build/esp32/firmware :', c + 'fs cp -r build/esp32/lib :',
                c + 'fs cp build/esp32/boot.py :boot.py', c + 'fs cp build/esp32/main.py :main.py']
    if os.path.exists(os.path.join(ROOT, 'config.json')):
        expected.append(c + 'fs cp config.json :config.json')
    expected.append(c + "exec import os; 'ota.json' in os.listdir() and os.remove('ota.json')")
    expected.append(c + 'reset')
    assert lines == expected
