"""Keeps the long-running tasks alive: a task that raises is restarted with backoff.

Owned by the reliability work (watchdog feeding on progress, traceback ring buffer build on it).
"""
import asyncio
import time


class Supervisor:
    def __init__(self, log):
        self._log = log
        self.tasks = {}

    def spawn(self, name, fn, critical=False):
        """Run coroutine function `fn()` forever; restart it with backoff when it raises."""
        info = {'restarts': 0, 'error': None, 'critical': critical, 'beat': time.ticks_ms()}
        self.tasks[name] = info
        info['task'] = asyncio.create_task(self._keep(name, fn, info))

    def beat(self, name):
        """A critical task calls this to show progress (the watchdog is fed only while all do)."""
        info = self.tasks.get(name)
        if info:
            info['beat'] = time.ticks_ms()

    async def _keep(self, name, fn, info):
        delay = 1
        while True:
            try:
                await fn()
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:
                info['restarts'] += 1
                info['error'] = repr(e)
                self._log.error('task', name, 'died:', repr(e), '- restart in', delay, 's')
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60)

    def status(self):
        return dict((n, {'restarts': i['restarts'], 'error': i['error']}) for n, i in self.tasks.items())
