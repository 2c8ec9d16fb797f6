"""The camera stand-in's "memory" mode (bench/bench_cost.py uses it): the firmware streams the
same frames as from the files, and the files are read once, not at every capture."""
import os
import shutil
import time

from testkit.helpers import MjpegReader
from testkit.paths import ROOT

STILL = os.path.join(ROOT, 'sim', 'frames', '640x480', 'still')


def _frames(port, n, timeout=20):
    r = MjpegReader(port, '/stream', timeout=10)
    end = time.monotonic() + timeout
    out = []
    try:
        while len(out) < n and time.monotonic() < end:
            out.append(r.frame()[1])
    finally:
        r.close()
    return out


def test_memory_mode_streams_the_files_frames_read_once(firmware, tmp_path):
    folder = tmp_path / 'frames'
    shutil.copytree(STILL, folder)
    names = sorted(os.listdir(folder))
    files = [(folder / n).read_bytes() for n in names]
    dev = firmware(camera={'memory': True, 'folder': str(folder)})
    got = _frames(dev.ports['stream'], len(files) + 2)
    assert len(got) == len(files) + 2
    # the very bytes of the files, in the stand-in's order (a run of consecutive files)
    i = files.index(got[0])
    assert got == [files[(i + k) % len(files)] for k in range(len(got))]
    # every file has been served once: changing them now changes nothing, the frames come
    # from memory (in file mode the next capture would serve the new bytes)
    for n in names:
        (folder / n).write_bytes(b'\xff\xd8changed\xff\xd9')
    later = _frames(dev.ports['stream'], len(files))
    assert len(later) == len(files)
    assert all(f in files for f in later)
