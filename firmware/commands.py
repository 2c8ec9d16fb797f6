"""The command layer: one table of actions shared by the admin server, LFCP and Telegram.

A handler is a coroutine function taking a dict of arguments and returning a short text; it
raises CommandError with a reason the caller can show (HTTP 4xx/5xx, LFCP ERR, a chat reply).
"""


class CommandError(Exception):
    """The command could not be carried out (not configured, camera off, router refused...)."""


class BadArgs(CommandError):
    """The command's arguments are wrong: the caller's mistake, not the device's state."""


class Commands:
    def __init__(self, log):
        self._log = log
        self._handlers = {}

    def register(self, name, handler, help=''):
        self._handlers[name] = (handler, help)

    def has(self, name):
        return name in self._handlers

    def help(self):
        return [(n, self._handlers[n][1]) for n in sorted(self._handlers)]

    async def run(self, name, args=None, source='?'):
        entry = self._handlers.get(name)
        if entry is None:
            raise CommandError('unknown command: ' + name)
        self._log('command', name, 'from', source)
        try:
            return await entry[0](args or {})
        except CommandError as e:
            self._log.warn('command', name, 'failed:', e.args[0] if e.args else '')
            raise
        except Exception as e:  # a handler bug becomes a reported failure, not a dead server
            self._log.error('command', name, 'crashed:', repr(e))
            raise CommandError('internal error: ' + repr(e))
