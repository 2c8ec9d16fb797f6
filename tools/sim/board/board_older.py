# The built-in modules of a MicroPython older than the VM (SIM_MICROPYTHON < 1.29), installed by
# mpy_api.install() before boot.py runs. Not a module of the real board. See docs/simulator.md,
# "MicroPython versions".
import sys

# Built-in modules a release does not have. `import` of a built-in cannot be redirected by a file
# on the path, so builtins.__import__ refuses them, as the board's VM would.
_missing = []
_real_import = [None]


def _import(name, *args):
    if name in _missing:
        raise ImportError("no module named '%s'" % name)
    return _real_import[0](name, *args)


def install(version):
    import board_os
    import board_sys
    import board_vfs
    import builtins

    if version < (1, 23):
        _missing.append("vfs")    # extmod/modvfs.c arrived in 1.23; os.mount/os.VfsFat before
    else:
        sys.modules["vfs"] = board_vfs
    sys.modules["os"] = board_os
    sys.modules["sys"] = board_sys
    if version < (1, 22):
        import board_ssl121       # the C `ssl` of 1.21; `tls` (and ssl.py over it) from 1.22

        sys.modules["ssl"] = board_ssl121
        _missing.append("tls")
    if _missing:
        _real_import[0] = builtins.__import__
        builtins.__import__ = _import
