"""Why the board restarted, and the ways to restart it on purpose.

machine.reset_cause() tells power-on (a brownout reports the same), watchdog, deep-sleep wake and
hard reset apart, but not a requested reboot from a crash, nor which task starved the watchdog.
So before every deliberate reset the reason is written to a small note on flash, and at boot the
note is read back, reported once (log line and status) and removed.

Shutdown hooks (UPnP delete, camera off) run before a reboot or deep sleep, each bounded in time,
so a hook that hangs or fails cannot keep the board from restarting.
"""
import asyncio
import os
import time

from firmware.core import store

NOTE = 'reset_note.json'
HOOK_TIMEOUT_S = 5


def cause_name(machine, cause):
    for attr, name in (('PWRON_RESET', 'power-on'), ('HARD_RESET', 'hard reset'),
                       ('WDT_RESET', 'watchdog'), ('DEEPSLEEP_RESET', 'deep sleep wake'),
                       ('SOFT_RESET', 'soft reset')):
        if getattr(machine, attr, None) == cause:
            return name
    return 'unknown (%r)' % (cause,)


class Recovery:
    def __init__(self, machine, log, note=NOTE):
        self._machine = machine
        self._log = log
        self._note_path = note
        self._hooks = []
        self.going_down = None        # reason, once a reboot or deep sleep has started
        self.cause = machine.reset_cause()
        self.cause_name = cause_name(machine, self.cause)
        self.note = self._take_note()

    def _take_note(self):
        try:
            note = store.load(self._note_path)
        except ValueError:
            note = None
        try:
            os.remove(self._note_path)
        except OSError:
            pass
        if not isinstance(note, dict):
            return None
        kind = note.get('kind')
        # a note belongs to this boot only if the reset it announced is the one that happened
        if (kind == 'reboot' and self.cause == self._machine.HARD_RESET) or \
           (kind == 'deepsleep' and self.cause == self._machine.DEEPSLEEP_RESET) or \
           (kind == 'stall' and self.cause == self._machine.WDT_RESET):
            return str(note.get('why', ''))[:120]
        return None

    def report(self):
        """The boot line: 'boot: reset cause watchdog (task camera stalled 31 s)'."""
        line = 'boot: reset cause ' + self.cause_name
        if self.note:
            line += ' (' + self.note + ')'
        if self.cause == getattr(self._machine, 'WDT_RESET', None):
            self._log.warn(line)
        else:
            self._log(line)
        return line

    def status(self):
        return {'reset_cause': self.cause_name, 'reset_note': self.note,
                'going_down': self.going_down}

    def on_shutdown(self, name, fn):
        """Run coroutine function fn() before every reboot and deep sleep (at most 5 s)."""
        self._hooks.append((name, fn))

    def note_stall(self, task, age_s):
        """Supervisor on_stall: the next boot reports which task starved the watchdog."""
        self._write('stall', 'task %s stalled %d s' % (task, age_s))

    def _write(self, kind, why):
        try:
            store.save(self._note_path, {'kind': kind, 'why': why, 'time': time.time()})
        except Exception as e:  # a full or failing flash must not stop the restart
            self._log.error('recovery: cannot write the reset note:', repr(e))

    async def _shutdown(self, kind, why):
        self.going_down = why
        self._log.warn(kind + ':', why)
        for name, fn in self._hooks:
            try:
                await asyncio.wait_for(fn(), HOOK_TIMEOUT_S)
            except asyncio.TimeoutError:
                self._log.error('shutdown hook', name, 'timed out after', HOOK_TIMEOUT_S, 's')
            except Exception as e:  # the restart goes on whatever a hook does
                self._log.error('shutdown hook', name, 'failed:', repr(e))
        self._write(kind, why)

    async def reboot(self, why='requested'):
        if self.going_down:
            return
        await self._shutdown('reboot', why)
        self._machine.reset()

    async def deepsleep(self, seconds, why='requested'):
        if self.going_down:
            return
        await self._shutdown('deepsleep', '%s, %d s' % (why, seconds))
        self._machine.deepsleep(int(seconds) * 1000)

    def reboot_soon(self, why='requested', delay_ms=300):
        """From a command handler: the reply goes out first, then the board resets."""
        asyncio.create_task(self._later(self.reboot(why), delay_ms))

    def deepsleep_soon(self, seconds, why='requested', delay_ms=300):
        asyncio.create_task(self._later(self.deepsleep(seconds, why), delay_ms))

    async def _later(self, coro, delay_ms):
        await asyncio.sleep_ms(delay_ms)
        await coro
