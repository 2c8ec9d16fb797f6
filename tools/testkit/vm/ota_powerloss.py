"""Power cuts at every flash write of an update (runs on the MicroPython VM, LittleFS in RAM).

  cuts BUNDLE BOOT_PY   BUNDLE: a bundle of version "new" for the tiny tree below; BOOT_PY: the
                        never-updated boot.py. A board with version "old" at the flash root gets
                        the bundle installed by firmware/ota/install.py with the power cut at
                        block operation 1, 2, ... of the install, then of boot.py's trial write,
                        then of its rollback write. After every cut the flash is mounted afresh,
                        boot.py picks a slot, and that slot must hold a complete version (every
                        file as its manifest says, or the root's original files).
Prints "ok installs=N trial=N rollback=N old=N new=N" or "NOT BOOTABLE ..." (exit 1).

  heap BUNDLE IMAGE     installs the bundle from its file onto a file-backed flash; run with a
                        -X heapsize smaller than the bundle, it shows the bundle never sits in RAM
"""
import asyncio
import binascii
import hashlib
import json
import os
import sys

import recovery_powerloss as flash
from recovery_powerloss import BS, MemFlash, mount, umount

from firmware.core import store
from firmware.ota import install

OLD = {'firmware/app.py': 'VERSION = "old"\n' + '#' * 3000 + '\n',
       'firmware/version.py': 'VERSION = "old"\n', 'lib/microdot/microdot.py': '# old\n'}


class Log:
    def __call__(self, *a):
        pass

    warn = error = __call__


class Machine:
    """boot.py's trial starts a watchdog; here it only has to exist."""

    @staticmethod
    def WDT(timeout=0):
        return None


def base_image(boot_py):
    data = bytearray(b'\xff' * (BS * flash.BLOCKS))
    dev = MemFlash(data)
    os.VfsLfs2.mkfs(dev)
    mount(dev)
    for path, text in OLD.items():
        install.makedirs(path.rsplit('/', 1)[0])
        with open(path, 'w') as f:
            f.write(text)
    with open('boot.py', 'w') as f:
        f.write(boot_py)
    umount()
    return data


def run_install(bundle):
    pos = [0]

    async def read(buf):
        n = min(len(buf), len(bundle) - pos[0])
        buf[:n] = bundle[pos[0]:pos[0] + n]
        pos[0] += n
        return n

    asyncio.run(install.Installer('test-update-key-0123456789', Log(), 30).run(read, len(bundle)))


def boot(boot_py):
    """Run boot.py as the board does; returns the slot it put first on sys.path ('' = root)."""
    saved = sys.path[:]
    sys.modules['machine'] = Machine
    try:
        exec(boot_py, {'__name__': '__main__'})
        return sys.path[0] if sys.path[0] not in saved else ''
    finally:
        sys.path[:] = saved
        del sys.modules['machine']


def sha(path):
    h = hashlib.sha256()
    buf = bytearray(1024)
    with open(path, 'rb') as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(memoryview(buf)[:n])
    return binascii.hexlify(h.digest()).decode()


def bootable(slot):
    """'old' or 'new' when the slot holds one whole version, else why not."""
    if slot == '':
        for path, text in OLD.items():
            try:
                with open(path) as f:
                    if f.read() != text:
                        return 'root file %s changed' % path
            except OSError:
                return 'root file %s lost' % path
        return 'old'
    try:
        m = store.load(slot + '/manifest.json')
    except ValueError as e:
        return 'manifest of %s unreadable: %s' % (slot, e)
    if m is None:
        return 'boot.py chose %s, which has no manifest' % slot
    for path, size, digest in m['files']:
        try:
            if sha(slot + '/' + path) != digest:
                return '%s/%s does not match its hash' % (slot, path)
        except OSError:
            return '%s/%s missing' % (slot, path)
    return 'new'


def ops_of(data, fn):
    probe = MemFlash(bytearray(data))
    mount(probe)
    probe.ops = 0
    fn()
    umount()
    return probe.ops


def cut_run(data, at, fn):
    """Run fn with the power cut at block operation `at`, then remount on a fresh device."""
    dev = MemFlash(data)
    mount(dev)
    dev.ops = 0
    dev.cut_at = at
    try:
        fn()
    except Exception:
        pass          # what the install saw after the cut does not matter, only the flash
    dev.dead = True
    umount()
    mount(MemFlash(data))


def check(counts, where, boot_py):
    got = bootable(boot(boot_py))
    if got not in ('old', 'new'):
        print('NOT BOOTABLE after a cut in', where + ':', got)
        sys.exit(1)
    counts[got] += 1
    umount()


def main(bundle_path, boot_path):
    with open(bundle_path, 'rb') as f:
        bundle = f.read()
    with open(boot_path) as f:
        boot_py = f.read()
    base = base_image(boot_py)
    counts = {'installs': 0, 'trial': 0, 'rollback': 0, 'old': 0, 'new': 0}
    n = ops_of(base, lambda: run_install(bundle))
    for at in range(1, n + 1):
        data = bytearray(base)
        cut_run(data, at, lambda: run_install(bundle))
        counts['installs'] += 1
        check(counts, 'install op %d of %d' % (at, n), boot_py)
    # the install completed: boot.py's trial write (tries = 1), then its rollback write
    installed = bytearray(base)
    mount(MemFlash(installed))
    run_install(bundle)
    umount()
    for phase in ('trial', 'rollback'):
        k = ops_of(installed, lambda: boot(boot_py))
        for at in range(1, k + 1):
            data = bytearray(installed)
            cut_run(data, at, lambda: boot(boot_py))
            counts[phase] += 1
            check(counts, '%s write op %d of %d' % (phase, at, k), boot_py)
        mount(MemFlash(installed))
        boot(boot_py)
        st = json.loads(open('ota.json').read())
        umount()
        if phase == 'trial' and not (st['trial'] and st['tries'] == 1):
            print('NOT BOOTABLE: the trial boot did not count itself:', st)
            sys.exit(1)
    print('ok', ' '.join('%s=%d' % (k, counts[k]) for k in sorted(counts)))


def heap(bundle_path, image):
    """Run under a small -X heapsize: the bundle streams from a file onto a file-backed flash."""
    flash.BLOCKS = 96         # room for a bundle larger than the whole heap
    flash.fmt(image)
    mount(flash.FileFlash(image))
    for path, text in OLD.items():
        install.makedirs(path.rsplit('/', 1)[0])
        with open(path, 'w') as f:
            f.write(text)
    src = open(bundle_path, 'rb')
    size = src.seek(0, 2)
    src.seek(0)

    async def read(buf):
        return src.readinto(buf)

    m = asyncio.run(install.Installer('test-update-key-0123456789', Log(), 30).run(read, size))
    print('installed', m['version'], 'bundle', size, 'verdict', bootable('slots/a'))
    umount()


if sys.argv[1] == 'heap':
    heap(sys.argv[2], sys.argv[3])
else:
    main(sys.argv[1], sys.argv[2])
