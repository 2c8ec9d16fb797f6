"""A tiny publish/subscribe bus: services announce facts, others react, nobody imports anybody.

Handlers are plain functions called at once, in order; a handler that needs to wait starts a task.
"""

# The events, with what their handlers receive:
ALARM = 'alarm'            # the alarm panel raised an alarm: AlarmEvent
ARMED = 'armed'            # the panel's state changed: state ('armed'...), reason
MANAGEMENT = 'management'  # the LFCP management servers became reachable or not: up (bool)
UPLINK = 'uplink'          # Wi-Fi joined or lost an upstream access point: up (bool)
INTERNET = 'internet'      # the Internet probe's verdict changed: up (bool)
CLIP = 'clip'              # a clip is complete on the card: info dict (path, reason, time, frames, fps)
CAMERA = 'camera'          # the camera service's state changed: 'on', 'off', 'failed'...
CLOCK = 'clock'            # the board's clock was set for the first time since boot (NTP)


class Bus:
    def __init__(self, log=None):
        self._subs = {}
        self._log = log

    def on(self, name, fn):
        self._subs.setdefault(name, []).append(fn)

    def emit(self, name, *args):
        for fn in self._subs.get(name, ()):
            try:
                fn(*args)
            except Exception as e:  # one failing subscriber must not starve the others
                if self._log:
                    self._log.error('event', name, 'handler failed:', repr(e))
