"""Power-loss driver for firmware/core/store.py on a LittleFS image (runs on the MicroPython VM).

  inject SEED N   in-memory flash; N saves, each cut at a random block operation (power cut,
                  optionally a torn write) or hit by one transient I/O error; after every
                  fault the flash is remounted and the file must load as the old or new version
  loop IMAGE N    file-backed flash; saves versions 1..N, printing "saved V" after each; the
                  test SIGKILLs the VM at a random moment
  check IMAGE     mounts the image and prints "loaded V" (or "loaded none")
  format IMAGE    creates a fresh image

Every version is a distinct JSON document spanning one to three flash blocks, so a mix of two
versions or a torn block is caught by comparing the loaded document with the expected one.
"""
import gc
import os
import random
import sys

import micropython

from firmware.core import store

BS = 4096
BLOCKS = 32
NAME = 'config.json'


def version(n):
    """Deterministic document number n: size and contents both depend on n."""
    return {'v': n, 'pad': chr(97 + n % 26) * (200 + (n * 7919) % 9000), 'tail': n * 3}


# No allocation in the device: LittleFS may call it from a GC finaliser (heap locked), as the
# ESP32's C flash driver allows; a slice here would raise MemoryError inside the GC.
@micropython.viper
def _copy(dst, d: int, src, s: int, n: int):
    pd = ptr8(dst)
    ps = ptr8(src)
    for i in range(n):
        pd[d + i] = ps[s + i]


@micropython.viper
def _fill(dst, d: int, n: int):
    pd = ptr8(dst)
    for i in range(n):
        pd[d + i] = 0xff


class MemFlash:
    """NOR-like flash over a bytearray: erase sets 0xFF; faults are armed per operation."""

    def __init__(self, data):
        self.data = data
        self.ops = 0
        self.cut_at = -1      # operation number at which power goes away
        self.torn = False     # that operation writes only a prefix
        self.eio_at = -1      # operation number that fails once, then the device works again
        self.dead = False

    def _fault(self, buf=None, addr=0):
        """0 when the operation reaches the flash, 1 when power is gone (silently lost), or
        -EIO for a transient error. The error is returned, as the block-device protocol says,
        not raised: an exception would longjmp out of LittleFS mid-operation and leave its
        open-file list pointing at a freed object (the VM then crashes at random, GC-timed)."""
        self.ops += 1
        if self.dead:
            return 1
        if self.ops == self.eio_at:
            return -5
        if self.ops == self.cut_at:
            self.dead = True
            if buf is not None and self.torn:
                k = random.randrange(len(buf))
                _copy(self.data, addr, buf, 0, k)
            return 1
        return 0

    def readblocks(self, b, buf, off=0):
        if self.dead:
            return 0
        a = b * BS + off
        _copy(buf, 0, self.data, a, len(buf))
        return 0

    def writeblocks(self, b, buf, off=0):
        a = b * BS + off
        f = self._fault(buf, a)
        if f == 0:
            _copy(self.data, a, buf, 0, len(buf))
        return min(f, 0)

    def ioctl(self, op, arg):
        if op == 4:
            return BLOCKS
        if op == 5:
            return BS
        if op == 6:
            f = self._fault()
            if f == 0:
                _fill(self.data, arg * BS, BS)
            return min(f, 0)
        return 0


class FileFlash:
    """Flash in a file: every block write is a write() syscall, so it survives a SIGKILL."""

    def __init__(self, path):
        self.f = open(path, 'r+b')

    def readblocks(self, b, buf, off=0):
        self.f.seek(b * BS + off)
        self.f.readinto(buf)

    def writeblocks(self, b, buf, off=0):
        self.f.seek(b * BS + off)
        self.f.write(buf)

    def ioctl(self, op, arg):
        if op == 4:
            return BLOCKS
        if op == 5:
            return BS
        if op == 6:
            self.f.seek(arg * BS)
            self.f.write(b'\xff' * BS)
        return 0


def mount(dev):
    os.mount(os.VfsLfs2(dev), '/flash')
    os.chdir('/flash')


def umount():
    os.chdir('/')
    try:
        os.umount('/flash')
    except OSError:
        pass


def loaded():
    d = store.load(NAME)
    return None if d is None else d.get('v')


def check_equal(n):
    d = store.load(NAME)
    if n is None:
        return d is None
    return d == version(n)


def inject(seed, n):
    random.seed(seed)
    data = bytearray(b'\xff' * (BS * BLOCKS))
    dev = MemFlash(data)
    os.VfsLfs2.mkfs(dev)
    mount(dev)
    cur = None
    counts = {'old': 0, 'new': 0, 'clean': 0, 'eio': 0, 'cut': 0, 'torn': 0, 'eio+cut': 0}
    for i in range(n):
        new = (cur or 0) + 1
        # count this save's block operations on a dry run first, then cut inside that range
        dev.ops = 0
        # 0 clean, 1 transient I/O error, 2 power cut, 3 torn write + cut, 4 error then cut
        kind = random.randrange(5)
        if kind:
            probe = MemFlash(bytearray(data))
            umount()
            mount(probe)
            store.save(NAME, version(new))
            total = probe.ops
            umount()
            mount(dev)
            at = 1 + random.randrange(max(total, 1))
            dev.ops = 0
            if kind in (1, 4):
                dev.eio_at = at
            if kind >= 2:
                dev.cut_at = at + (1 + random.randrange(4) if kind == 4 else 0)
                dev.torn = kind == 3
            counts[('', 'eio', 'cut', 'torn', 'eio+cut')[kind]] += 1
        try:
            store.save(NAME, version(new))
        except OSError:
            pass
        if kind == 1:
            # no reset after a transient error: the firmware runs on, the file the failed save
            # left open is closed by the GC on the same (live) filesystem, and the file still
            # reads as one of the two versions
            gc.collect()
            if not (check_equal(cur) or check_equal(new)):
                d = store.load(NAME)
                print('CORRUPT without reset at save', i, 'expected', cur, 'or', new, 'got', d and d.get('v'), d and len(d['pad']), len(version(new)['pad']), cur and len(version(cur)['pad']))
                sys.exit(1)
        # reset: the old filesystem instance and its open files die with the RAM (a late
        # finaliser of a file left open by the failed save must not reach the flash), then a
        # fresh device object mounts the same bytes
        dev.dead = True
        umount()
        dev = MemFlash(data)
        mount(dev)
        got = loaded()
        if kind == 0 and not (got == new and check_equal(new)):
            print('LOST a clean save', i, 'expected', new, 'got', got)
            sys.exit(1)
        if got == new and check_equal(new):
            counts['new'] += 1
            cur = new
        elif got == cur and check_equal(cur):
            counts['old'] += 1
        else:
            print('CORRUPT at save', i, 'fault', kind, 'expected', cur, 'or', new, 'got', store.load(NAME))
            sys.exit(1)
        if kind == 0:
            counts['clean'] += 1
    umount()
    print('ok', n, 'saves', ' '.join('%s=%d' % (k, counts[k]) for k in sorted(counts)))


def loop(path, n):
    mount(FileFlash(path))
    start = loaded() or 0
    for v in range(start + 1, start + 1 + n):
        store.save(NAME, version(v))
        print('saved', v)
    umount()


def check(path):
    mount(FileFlash(path))
    v = loaded()
    if v is not None and not check_equal(v):
        print('CORRUPT', store.load(NAME))
        sys.exit(1)
    print('loaded', v if v is not None else 'none')
    umount()


def fmt(path):
    with open(path, 'wb') as f:
        for _ in range(BLOCKS):
            f.write(b'\xff' * BS)
    dev = FileFlash(path)
    os.VfsLfs2.mkfs(dev)
    print('formatted')


def main(argv):
    cmd = argv[1]
    if cmd == 'inject':
        inject(int(argv[2]), int(argv[3]))
    elif cmd == 'loop':
        loop(argv[2], int(argv[3]))
    elif cmd == 'check':
        check(argv[2])
    elif cmd == 'format':
        fmt(argv[2])


if __name__ == '__main__':   # ota_powerloss.py imports its flash
    try:
        main(sys.argv)
    except ValueError as e:   # store.load on a corrupt file
        print('CORRUPT', e)
        sys.exit(1)
