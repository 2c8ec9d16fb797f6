"""Install an update bundle from a stream, staged in a spare slot, switched at the next boot.

A bundle (made by tools/build/bundle.py) is:
    b'ECAB1 <n>\\n'   <n> bytes of manifest JSON   32-byte HMAC-SHA256(update.key, manifest)
    then every file of the manifest, in its order, back to back.
The manifest names the version, the MicroPython version and .mpy ABI it was compiled for, and the
size and SHA-256 of every file; the tag proves it was made with this device's update key, the
hashes prove every file. So everything is checked before a byte is written (tag, MicroPython,
room on the flash) or as it streams (each file's hash), and the switch is one atomic rename of
ota.json, done only when the whole slot has been read back from the flash and verified.

Slots: '' is the flash root (what `make deploy` installs), 'slots/a' and 'slots/b' the updates.
The slot being written is never the active one (it holds the oldest version), so a refusal or
a power cut at any point leaves the running version and its fallback as they were.
"""
import asyncio
import binascii
import gc
import hashlib
import json
import os
import sys

from firmware.core import store
from firmware.core.secret import hmac_sha256, same_bytes
from firmware.ota.trial import STATE, state

MAGIC = b'ECAB1 '
MANIFEST_MAX = 16384
SLICE = 1024
SLOTS = ('slots/a', 'slots/b')


class Refused(Exception):
    """The bundle is not installed; args[0] says why, in words for the owner."""


def micropython():
    """(version 'x.y.z', mpy ABI number) of the running MicroPython."""
    v = sys.implementation.version
    return '%d.%d.%d' % (v[0], v[1], v[2]), getattr(sys.implementation, '_mpy', 0)


def remove_tree(path):
    if not store.exists(path):
        return
    for name, kind, _ in [e[:3] for e in os.ilistdir(path)]:
        p = path + '/' + name
        if kind == 0x4000:
            remove_tree(p)
        else:
            os.remove(p)
    os.rmdir(path)


def tree_bytes(path, block):
    """Flash a tree occupies (whole blocks, one more per file for its metadata)."""
    n = 0
    if store.exists(path):
        for name, kind, _, size in [e[:4] for e in os.ilistdir(path)]:
            p = path + '/' + name
            if kind == 0x4000:
                n += tree_bytes(p, block) + block
            else:
                n += (size + block - 1) // block * block + block
    return n


def makedirs(path):
    p = ''
    for part in path.split('/'):
        p = p + '/' + part if p else part
        if not store.exists(p):
            os.mkdir(p)


def _safe(path):
    if not path or path[0] == '/' or '\\' in path:
        return False
    for part in path.split('/'):
        if part in ('', '.', '..'):
            return False
    return path.split('/')[0] in ('firmware', 'lib')


def check_manifest(m):
    if not isinstance(m, dict) or not isinstance(m.get('files'), list) or \
            not isinstance(m.get('version'), str):
        raise Refused('the manifest is malformed')
    for f in m['files']:
        if not (isinstance(f, list) and len(f) == 3 and isinstance(f[0], str) and
                isinstance(f[1], int) and f[1] >= 0 and isinstance(f[2], str) and _safe(f[0])):
            raise Refused('the manifest lists a bad file entry: %r' % (f,))
    mp, abi = micropython()
    if m.get('micropython') != mp or m.get('mpy') != abi:
        raise Refused('built for MicroPython %s (mpy ABI %s); this board runs MicroPython %s '
                      '(mpy ABI %s): build the bundle with the mpy-cross of %s'
                      % (m.get('micropython'), m.get('mpy'), mp, abi, mp))
    names = [f[0] for f in m['files']]
    if 'firmware/app.mpy' not in names and 'firmware/app.py' not in names:
        raise Refused('the bundle has no firmware/app: not a firmware bundle')


def body_reader(req):
    """async readinto(buf) over the request body, read already (small) or still on the socket."""
    if not req.body:
        return req.stream.readinto
    src = req.body
    pos = [0]

    async def read(buf):
        n = min(len(buf), len(src) - pos[0])
        buf[:n] = src[pos[0]:pos[0] + n]
        pos[0] += n
        return n
    return read


async def drain(read, left):
    """Read what is left of a refused body, so the client gets the answer, not a reset."""
    buf = bytearray(512)
    while left > 0:
        try:
            n = await asyncio.wait_for(read(memoryview(buf)[:min(left, 512)]), 10)
        except (asyncio.TimeoutError, OSError):
            return
        if not n:
            return
        left -= n


class Installer:
    """One install at a time; `await run(read, length)` returns the manifest or raises Refused.

    read(buf) is an async readinto of the request body; `length` its Content-Length."""

    def __init__(self, key, log, confirm_s=120):
        self.key = key
        self.log = log
        self.confirm_s = confirm_s
        self.buf = bytearray(SLICE)
        self.left = 0
        self.progress = None        # (bytes written, bytes to write) while an install runs

    async def _readinto(self, read, mv):
        got = 0
        while got < len(mv):
            n = await read(mv[got:])
            if not n:
                raise Refused('truncated: the bundle ended %d bytes early' % (len(mv) - got))
            got += n
        self.left -= got

    async def _exact(self, read, n):
        if n > self.left:
            raise Refused('truncated: the bundle ended %d bytes early' % (n - self.left))
        out = bytearray(n)
        await self._readinto(read, memoryview(out))
        return out

    async def run(self, read, length):
        self.left = length
        st = state()
        if st.get('trial'):
            raise Refused('the last update (%s) is still on trial: wait until it reports healthy'
                          % st.get('version'))
        head = await self._exact(read, min(len(MAGIC) + 8, length))
        if head[:len(MAGIC)] != MAGIC or b'\n' not in head:
            raise Refused('not an update bundle (made by make bundle)')
        nl = head.index(b'\n')
        try:
            n = int(head[len(MAGIC):nl])
        except ValueError:
            raise Refused('not an update bundle (bad header)')
        if not 0 < n <= MANIFEST_MAX:
            raise Refused('the manifest size %d is out of range' % n)
        raw = head[nl + 1:] + await self._exact(read, n - (len(head) - nl - 1))
        tag = await self._exact(read, 32)
        if not same_bytes(hmac_sha256(self.key, raw), tag):
            raise Refused('bad tag: the bundle was not made with this device\'s update.key '
                          '(or its manifest is corrupted)')
        try:
            m = json.loads(raw)
        except ValueError:
            raise Refused('the manifest is not valid JSON')
        raw = None
        check_manifest(m)
        active = st.get('active', '')
        spare = SLOTS[1] if active == SLOTS[0] else SLOTS[0]
        self._fits(m, spare)
        total = sum(f[1] for f in m['files'])
        if total != self.left:
            if total > self.left:
                raise Refused('truncated: the bundle ended %d bytes early' % (total - self.left))
            raise Refused('%d unexpected bytes after the last file' % (self.left - total))
        self.log('update: installing', m['version'], 'into', spare)
        remove_tree(spare)
        try:
            await self._write(read, m, spare)
            self._verify(m, spare)
            store.save(spare + '/manifest.json', m)
        except Exception:
            gc.collect()      # close what a failed write left open before removing it
            remove_tree(spare)
            raise
        # the switch: one atomic rename; boot.py reads it at the next boot
        store.save(STATE, {'active': spare, 'previous': active, 'trial': True, 'tries': 0,
                           'version': m['version'], 'previous_version': st.get('version'),
                           'confirm_s': self.confirm_s})
        self.log('update:', m['version'], 'installed in', spare, '- it runs after the restart')
        return m

    def _fits(self, m, spare):
        s = os.statvfs('.')     # the flash (the board's working directory)
        block = s[0]
        free = s[0] * s[4] + tree_bytes(spare, block)
        dirs = {}
        need = 2 * block        # the manifest and ota.json
        for f in m['files']:
            need += (f[1] + block - 1) // block * block + block
            dirs[f[0].rsplit('/', 1)[0]] = 1
        need += len(dirs) * block
        if need > free:
            raise Refused('does not fit: the bundle needs %d KB of flash, %d KB are free'
                          % (need // 1024, free // 1024))

    async def _write(self, read, m, spare):
        made = {}
        done = 0
        total = sum(f[1] for f in m['files'])
        mv = memoryview(self.buf)
        for path, size, digest in m['files']:
            d = spare + '/' + path.rsplit('/', 1)[0]
            if d not in made:
                makedirs(d)
                made[d] = 1
            h = hashlib.sha256()
            with open(spare + '/' + path, 'wb') as f:
                left = size
                while left:
                    k = min(left, SLICE)
                    await self._readinto(read, mv[:k])
                    h.update(mv[:k])
                    f.write(mv[:k])
                    left -= k
                    done += k
                    self.progress = (done, total)
            if _hex(h.digest()) != digest:
                raise Refused('corrupted: %s does not match its SHA-256' % path)

    def _verify(self, m, spare):
        """Read every file back from the flash: what boots is what was checked."""
        mv = memoryview(self.buf)
        for path, size, digest in m['files']:
            h = hashlib.sha256()
            n = 0
            with open(spare + '/' + path, 'rb') as f:
                while True:
                    k = f.readinto(self.buf)
                    if not k:
                        break
                    h.update(mv[:k])
                    n += k
            if n != size or _hex(h.digest()) != digest:
                raise Refused('the flash did not keep %s: write failed, nothing switched' % path)


def _hex(b):
    return binascii.hexlify(b).decode()
