# The `vfs` module (and os.VfsFat) of a MicroPython older than the VM, for SIM_MICROPYTHON < 1.29
# (mpy_api.install() puts it in sys.modules). A Python block device's readblocks/writeblocks
# answer is read by the C code of VfsFat, and each release reads it differently
# (extmod/vfs_blockdev.c):
# - 1.21: the answer is ignored ("TODO handle error return"): a failed transfer reads as success;
# - 1.24.1: True is success, False is EIO, an int is an errno (bool support, 5dc9eda195);
# - 1.29: only an int (0 or -errno); the bool support was reverted and machine.SDCard answers
#   0/-EIO since 792304a22d. That is the VM's own VfsFat.
# machine.SDCard answers True/False before 1.29, as the board's does; VfsFat here hands the VM's
# VfsFat a device that turns the answer into what the older VfsFat made of it.
# Not a module of the real board: firmware never imports it by this name.
import vfs as _vfs

import mpy_api

for _k in dir(_vfs):
    if _k[0] != "_":
        globals()[_k] = getattr(_vfs, _k)


class _OldDevice:
    """`dev` as the VfsFat of mpy_api.version reads it."""

    def __init__(self, dev):
        self.dev = dev
        if hasattr(dev, "ioctl"):
            self.ioctl = dev.ioctl
        if hasattr(dev, "writeblocks"):
            self.writeblocks = self._write

    def _answer(self, r):
        if mpy_api.version < (1, 22):
            return 0
        if r is True:
            return 0
        if r is False:
            return -5   # EIO
        return r

    def readblocks(self, n, buf):
        return self._answer(self.dev.readblocks(n, buf))

    def _write(self, n, buf):
        return self._answer(self.dev.writeblocks(n, buf))


class VfsFat:
    """The FAT file system of the VM, on the device as the older release reads it."""

    def __new__(cls, dev):
        return _vfs.VfsFat(_OldDevice(dev))

    @staticmethod
    def mkfs(dev):
        _vfs.VfsFat.mkfs(_OldDevice(dev))
