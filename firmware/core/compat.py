"""What this board's MicroPython can run of the firmware, checked once at boot; app.main() drops
this module from the heap afterwards."""


def _why(e):
    import sys
    v = sys.implementation.version
    return ('motion detection cannot load on MicroPython %d.%d (%s): flash a build for this '
            'version (make deploy MICROPYTHON=%d.%d)' % (v[0], v[1], e, v[0], v[1]))


def detection_missing():
    """Why the detection code cannot load on this board, or None; checked at boot without
    importing it (its heap is the viewers' until the first arming). A build for another
    MicroPython version loads everything but the native (viper) modules: their .mpy header must
    carry this VM's .mpy version, sub-version and native architecture."""
    import sys
    import firmware.alarm as pkg
    mpy = getattr(sys.implementation, '_mpy', None)
    if mpy is None:
        return None
    for name in ('luma', 'detector'):
        try:
            with open(pkg.__path__ + '/' + name + '.mpy', 'rb') as f:
                h = f.read(4)
        except OSError:
            continue                # source, compiled here: nothing to match
        if len(h) < 4 or h[1] != mpy & 0xff or (h[2] >> 2 and (
                h[2] & 3 != (mpy >> 8) & 3 or h[2] >> 2 != mpy >> 10)):
            return _why('incompatible .mpy file %s.mpy: v%d.%d' % (name, h[1], h[2] & 3))
    return None
