# The `sys` module as a board of an older MicroPython shows it, for SIM_MICROPYTHON < 1.29
# (board_older puts it in sys.modules): the VM's own, but sys.implementation names the chosen
# release and its .mpy ABI, which the firmware reads (core/compat.py refuses native modules
# built for another release; ota/install.py checks an update's version). The VM still loads
# what 1.29 loads. Not a module of the real board.
import sys as _sys

import mpy_api

for _k in dir(_sys):
    if _k[0] != "_" and _k != "implementation":
        globals()[_k] = getattr(_sys, _k)

_SUB = {(1, 21): 1, (1, 24): 3}     # .mpy sub-version of each release (tools/build/versions.py)
_REL = {(1, 21): 0, (1, 24): 1}     # the release of the series: 1.21.0, 1.24.1


class _Implementation:
    name = "micropython"

    def __init__(self):
        v = mpy_api.version
        self.version = (v[0], v[1], _REL[v], "")
        self._machine = _sys.implementation._machine
        # same .mpy version and native architecture as the VM, that release's sub-version
        real = _sys.implementation._mpy
        self._mpy = (real & ~0x300) | (_SUB[v] << 8)

    def __repr__(self):
        return "(name='micropython', version=%r, _machine=%r, _mpy=%d)" % (
            self.version, self._machine, self._mpy)


implementation = _Implementation()
