"""Keeps the long-running tasks alive and lets the hardware watchdog reboot a hung board.

A task that raises is restarted with backoff and its traceback kept in a ring buffer for the
admin page. With a watchdog timeout configured, a feeder task feeds machine.WDT only while every
critical task has called beat() within its allowance: a loop stuck in an await stops beating and
the board resets; a loop that never yields starves the feeder itself and the board resets too.
"""
import asyncio
import io
import sys
import time

from firmware.core import clock

BACKOFF_MAX_S = 60
HEALTHY_S = 60       # a task that ran this long restarts with the shortest backoff again
TRACE_CHARS = 1200   # a traceback kept for the admin page is cut to this


class Supervisor:
    def __init__(self, log, watchdog_s=0, machine=None, keep=8, on_stall=None):
        self._log = log
        self.tasks = {}
        self.traces = []             # newest last: {'task', 'time', 'trace'}
        self._keep = keep
        self.watchdog_s = watchdog_s
        self._machine = machine
        self._wdt = None
        self._feeder = None
        self.stalled = None          # name of the critical task that stopped the feeding
        self._on_stall = on_stall    # fn(name, age_s): e.g. a note for the next boot's report

    def spawn(self, name, fn, critical=False, allowance_s=None):
        """Run coroutine function `fn()` forever; restart it with backoff when it raises.

        A critical task must call beat(name) at least every `allowance_s` seconds (default: the
        watchdog timeout), idle or not, or the watchdog resets the board.
        """
        info = {'restarts': 0, 'error': None, 'critical': critical, 'beat': time.ticks_ms(),
                'allow_ms': 1000 * (allowance_s or self.watchdog_s or 30), 'running': True}
        self.tasks[name] = info
        info['task'] = asyncio.create_task(self._keep_alive(name, fn, info))
        if self.watchdog_s and self._feeder is None:
            self._feeder = asyncio.create_task(self._feed())

    def beat(self, name):
        """A critical task calls this to show progress (the watchdog is fed only while all do)."""
        info = self.tasks.get(name)
        if info:
            info['beat'] = time.ticks_ms()

    async def _keep_alive(self, name, fn, info):
        delay = 1
        while True:
            started = time.ticks_ms()
            try:
                await fn()
                self._log.warn('task', name, 'ended')
                info['running'] = False
                return
            except asyncio.CancelledError:
                info['running'] = False
                raise
            except Exception as e:
                info['restarts'] += 1
                info['error'] = self._log.redact(repr(e))
                self._keep_trace(name, e)
                if time.ticks_diff(time.ticks_ms(), started) > HEALTHY_S * 1000:
                    delay = 1
                self._log.error('task', name, 'died:', repr(e), '- restart in', delay, 's')
            await asyncio.sleep(delay)
            info['beat'] = time.ticks_ms()   # a restart is progress; crashing again is not
            delay = min(delay * 2, BACKOFF_MAX_S)

    def _keep_trace(self, name, e):
        buf = io.StringIO()
        sys.print_exception(e, buf)
        text = self._log.redact(buf.getvalue())
        if len(text) > TRACE_CHARS:
            text = '...' + text[-TRACE_CHARS:]
        self.traces.append({'task': name, 'time': clock.unix(), 'trace': text})   # None: not set
        if len(self.traces) > self._keep:
            self.traces.pop(0)

    def _stale(self):
        """(name, age_ms) of a critical task past its allowance, or None."""
        now = time.ticks_ms()
        for name, info in self.tasks.items():
            if info['critical']:
                age = time.ticks_diff(now, info['beat'])
                if age > info['allow_ms'] or not info['running']:
                    return name, age
        return None

    async def _feed(self):
        self._wdt = self._machine.WDT(timeout=self.watchdog_s * 1000)
        self._log('watchdog: on,', self.watchdog_s, 's')
        period = max(self.watchdog_s * 1000 // 4, 100)
        while True:
            stale = self._stale()
            if stale is None:
                self._wdt.feed()
                if self.stalled:
                    self._log('watchdog: task', self.stalled, 'beats again, feeding resumes')
                    self.stalled = None
            elif self.stalled != stale[0]:
                self.stalled = stale[0]
                self._log.error('watchdog: task', stale[0], 'shows no progress for',
                                stale[1] // 1000, 's: feeding stops, the board will reset')
                if self._on_stall:
                    try:
                        self._on_stall(stale[0], stale[1] // 1000)
                    except Exception as e:
                        self._log.error('watchdog: stall note failed:', repr(e))
            await asyncio.sleep_ms(period)

    def status(self):
        now = time.ticks_ms()
        out = {}
        for n, i in self.tasks.items():
            out[n] = {'restarts': i['restarts'], 'error': i['error'], 'critical': i['critical'],
                      'running': i['running']}
            if i['critical']:
                out[n]['beat_age_s'] = time.ticks_diff(now, i['beat']) // 1000
        return out

    def report(self):
        """Watchdog state and the kept tracebacks, for the admin page."""
        return {'watchdog': {'timeout_s': self.watchdog_s, 'on': self._wdt is not None,
                             'stalled': self.stalled},
                'tracebacks': self.traces}
