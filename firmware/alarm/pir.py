# A PIR sensor as a second opinion for the camera's motion detector.
#
# A PIR (HC-SR501 and the like) drives its output high for a few seconds when a warm body
# moves in its field; the camera sees light, the PIR sees heat: 'and' alarms only when both
# agree (a shadow or a car's headlights fool the camera, not the PIR), 'or' alarms on either
# (a dark corner the camera cannot see). The output is polled with each detector frame; a
# pulse shorter than a frame interval could be missed, the usual modules hold it >= 2 s.
import time

MODES = ("off", "and", "or")


class Pir:
    """Pir(pin, mode, hold_ms=3000): pin has value() (machine.Pin(13, Pin.IN) on the
    AI-Thinker, GPIO 13 is free); mode 'and' or 'or'. fuse(camera) -> (alarm, reason)."""

    def __init__(self, pin, mode, hold_ms=3000):
        if mode not in ("and", "or"):
            raise ValueError("alarm.pir must be one of %s, not %r" % (", ".join(MODES), mode))
        self.pin = pin
        self.mode = mode
        self.hold_ms = hold_ms
        self._seen = None   # ticks_ms of the last poll that saw the output high

    def active(self):
        """True while the output is high, and hold_ms after: the camera may see the
        intruder a frame or two after the PIR did, or before."""
        now = time.ticks_ms()
        if self.pin.value():
            self._seen = now
            return True
        return self._seen is not None and time.ticks_diff(now, self._seen) < self.hold_ms

    def fuse(self, camera):
        """The camera's verdict and the PIR's -> (alarm, reason)."""
        pir = self.active()
        if self.mode == "and":
            return (camera and pir), "motion+pir"
        if camera:
            return True, "motion"
        return pir, "pir"
