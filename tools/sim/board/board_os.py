# The `os` module of a MicroPython older than the VM, for SIM_MICROPYTHON < 1.29 (mpy_api.install()
# puts it in sys.modules): the VM's own, with os.VfsFat reading a block device's answers as that
# release did (board_vfs). os.mount/umount/VfsFat/VfsLfs2 are in every supported release (the
# only place before 1.23, deprecated since). Not a module of the real board.
import os as _os

import board_vfs

for _k in dir(_os):
    if _k[0] != "_":
        globals()[_k] = getattr(_os, _k)

VfsFat = board_vfs.VfsFat
