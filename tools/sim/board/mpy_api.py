# Which MicroPython's ESP32 API set the simulated board has: SIM_MICROPYTHON=1.21|1.24|1.29
# (default 1.29, the VM's own). The VM is always the unix port of 1.29; the stand-ins read
# `version` and expose what that release's ESP32 port has where the firmware touches it, and
# install() (called by power_on.py before boot.py) hides or replaces the built-ins that differ.
# Not a module of the real board: firmware never imports it. See docs/simulator.md,
# "MicroPython versions".
import os
import sys

SUPPORTED = ("1.21", "1.24", "1.29")    # tools/build/versions.py VERSIONS
DEFAULT = "1.29"


def _parse():
    name = os.getenv("SIM_MICROPYTHON") or DEFAULT
    if name not in SUPPORTED:
        return name, None
    return name, tuple(int(x) for x in name.split("."))


name, version = _parse()


def problem():
    """Why the simulator cannot start with this environment, or None."""
    if version is None:
        return ("SIM_MICROPYTHON=%s is not a supported MicroPython version; choose one of: %s"
                % (name, ", ".join(SUPPORTED)))
    if os.getenv("SIM_CAMERA") == "class" and version < (1, 24):
        return ("SIM_CAMERA=class: micropython-camera-API has no image for MicroPython %s "
                "(its builds start at 1.24); use the function camera (micropython-camera-driver) "
                "or SIM_MICROPYTHON=1.24 or later" % name)
    return None


# Built-in modules a release does not have. `import` of a built-in cannot be redirected by a file
# on the path, so builtins.__import__ refuses them, as the board's VM would.
_missing = []


def _import(name, *args):
    if name in _missing:
        raise ImportError("no module named '%s'" % name)
    return _real_import(name, *args)


_real_import = None


def install():
    """Make the VM's built-ins look like `version`'s; call before boot.py runs."""
    global _real_import
    if version is None or version >= (1, 29):
        return
    import board_os
    import board_vfs
    import builtins

    if version < (1, 23):
        _missing.append("vfs")    # extmod/modvfs.c arrived in 1.23; os.mount/os.VfsFat before
    else:
        sys.modules["vfs"] = board_vfs
    sys.modules["os"] = board_os
    if version < (1, 22):
        import board_ssl121       # the C `ssl` of 1.21; `tls` (and ssl.py over it) from 1.22

        sys.modules["ssl"] = board_ssl121
        _missing.append("tls")
    if _missing:
        _real_import = builtins.__import__
        builtins.__import__ = _import
