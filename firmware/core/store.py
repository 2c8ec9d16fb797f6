"""Atomic JSON files on flash: write a temporary file, then rename over the old one.

LittleFS (the ESP32 default) renames atomically, so after a power cut the file is either the old
or the new version. A leftover temporary file is ignored. These writes block the VM for a few
milliseconds: callers do them on state changes only, never per frame.
"""
import json
import os
from errno import EEXIST


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def load(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError:
        return default
    except ValueError as e:
        raise ValueError('%s: not valid JSON (%s)' % (path, e))


def save(path, data):
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(data, f)
    try:
        os.rename(tmp, path)
    except OSError as e:
        # Only "exists" may remove the old file first (a filesystem that will not rename onto
        # one); after an I/O error the old file must stay, or a power cut next loses both.
        if e.errno != EEXIST:
            raise
        os.remove(path)
        os.rename(tmp, path)


def set_aside(path):
    """Move a broken file out of the way (to path.bad), so the feature starts fresh and the
    owner can still look at what was there. Returns the new name, or None when it failed."""
    bad = path + '.bad'
    try:
        try:
            os.remove(bad)
        except OSError:
            pass
        os.rename(path, bad)
        return bad
    except OSError:
        return None
