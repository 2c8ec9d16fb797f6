"""A tiny publish/subscribe bus: services announce facts, others react, nobody imports anybody.

Handlers are plain functions called at once, in order; a handler that needs to wait starts a task.
Events in use: 'alarm' (AlarmEvent), 'armed' (state, reason), 'management' (up: bool),
'uplink' (up: bool), 'internet' (up: bool), 'camera' (state str), 'config' (section name).
"""


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
