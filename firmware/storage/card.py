"""The microSD card: mounted at boot, watched, remounted when it comes back.

The AI-Thinker ESP32-CAM wires the slot for 4-bit SD/MMC, but GPIO 4 (DATA1) also drives the
flash LED: in 1-bit mode (slot 1, width 1) the LED stays usable and the card still gives about
1 MB/s, plenty for a VGA clip at 10 fps. A card that is missing, unformatted, full or pulled out
is a state in /status and a log line, never an exception for the caller: recording stops, the
stream, the detector and the alarm go on.
"""
import asyncio
import os

try:
    import vfs  # MicroPython 1.23+: mount and the file systems moved here
except ImportError:
    vfs = os    # older images (1.21) have them in os

RETRY_S = 10       # how often a missing or failed card is looked for again


class Card:
    def __init__(self, machine, cfg, log):
        self.machine = machine
        self.cfg = cfg
        self.mount_point = cfg.mount
        self.log = log
        self.dev = None
        self.vfs = None
        self.state = 'none'        # none | unformatted | mounted | full | removed | error
        self.error = None
        self.users = []            # fn(mounted: bool): the recorder hears when the card goes

    def mounted(self):
        return self.state in ('mounted', 'full')

    def mount(self):
        """Mount the card; False (state says why) when there is none or it is unusable."""
        m = self.machine
        try:
            if self.dev is None:
                self.dev = m.SDCard(slot=1, width=1)
            if self.dev.ioctl(1, 0):                    # INIT: is a card answering?
                if self.state == 'removed':             # still out: keep saying it was pulled
                    return False
                return self._set('none', 'no card in the slot')
            self.vfs = vfs.VfsFat(self.dev)
            try:
                vfs.mount(self.vfs, self.mount_point)
            except OSError as e:
                if e.errno != 19:                       # ENODEV: no FAT file system on it
                    raise
                if not self.cfg.format_blank:
                    self.vfs = None
                    return self._set('unformatted', 'no FAT file system (set '
                                     'storage.format_blank to format it)')
                self.log.warn('card: formatting a blank card')
                vfs.VfsFat.mkfs(self.dev)
                self.vfs = vfs.VfsFat(self.dev)
                vfs.mount(self.vfs, self.mount_point)
        except OSError as e:
            self.vfs = None
            return self._set('error', 'mount failed: %s' % e)
        free = self.free()
        self._set('mounted', '%d MB free of %d MB' % (free >> 20, self.size() >> 20))
        for fn in self.users:
            fn(True)
        return True

    def _set(self, state, why):
        if state != self.state or why != self.error:
            (self.log if state == 'mounted' else self.log.warn)('card:', state, '-', why)
        self.state = state
        self.error = None if state == 'mounted' else why
        return False

    def lost(self, e):
        """A write or read failed: the card was pulled out, or it failed. Let go of it."""
        if not self.mounted():
            return
        try:
            vfs.umount(self.mount_point)
        except OSError:
            pass
        self.vfs = None
        self._set('removed', 'card gone while in use (%s)' % e)
        for fn in self.users:
            fn(False)

    def full(self, yes):
        if yes and self.state == 'mounted':
            self._set('full', 'no space left, nothing left to delete')
        elif not yes and self.state == 'full':
            self._set('mounted', 'space again')

    def statvfs(self):
        return os.statvfs(self.mount_point)

    def free(self):
        try:
            s = self.statvfs()
            return s[0] * s[3]
        except OSError:
            return 0

    def size(self):
        try:
            s = self.statvfs()
            return s[0] * s[2]
        except OSError:
            return 0

    async def run(self):
        """Mount the card, then look for it again while there is none usable (inserted later, or back in), and
        notice one pulled out while idle: the slot has no card-detect line on the AI-Thinker
        board, so one block is read every RETRY_S."""
        block = bytearray(512)
        self.mount()             # at boot: here, once the servers listen
        while True:
            await asyncio.sleep(RETRY_S)
            if self.mounted():
                try:
                    # a failed read is answered, not raised: False before 1.29, -EIO from it
                    r = self.dev.readblocks(0, block)
                    if r is False or isinstance(r, int) and r < 0:
                        raise OSError(5)
                except OSError as e:
                    self.lost(e)
            elif self.state != 'unformatted':
                self.mount()

    def status(self):
        s = {'state': self.state, 'mount': self.mount_point}
        if self.mounted():
            s['free'] = self.free()
            s['size'] = self.size()
        if self.error:
            s['error'] = self.error
        return s
