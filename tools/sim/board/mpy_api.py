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


def install():
    """Make the VM's built-ins look like `version`'s; call before boot.py runs."""
    if version is not None and version < (1, 29):
        import board_older

        board_older.install(version)
