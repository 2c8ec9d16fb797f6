"""The commands: declared once here, run by one layer, offered by every front end.

The admin page, LFCP and the Telegram bot derive their lists from TABLE; adding a command is one
line here and its handler in app.py. A handler is a coroutine function taking a dict of arguments
and returning a short text; it raises CommandError with a reason the caller can show (HTTP 4xx/5xx,
LFCP ERR, a chat reply).
"""


class CommandError(Exception):
    """The command could not be carried out (not configured, camera off, router refused...)."""


class BadArgs(CommandError):
    """The command's arguments are wrong: the caller's mistake, not the device's state."""


# One row per command, a plain tuple (a table of objects would cost the heap ~7 KB more):
#   name, group on the admin page, LFCP type, Telegram command, on the admin page, destructive
#   (asks for confirmation), arguments a form asks for, the original's LFCP LOG stem, help.
NAME, GROUP, LFCP, TELEGRAM, ADMIN, DESTRUCTIVE, ARGS, LOG, HELP = range(9)
TABLE = (
    ('arm', 'Alarm', 'ENAL', 'arm', 1, 0, (), 'alarm_enabled', 'arm the motion alarm'),
    ('disarm', 'Alarm', 'DSAL', 'disarm', 1, 0, (), 'alarm_disabled', 'disarm the motion alarm'),
    ('alarm_test', 'Alarm', None, None, 1, 0, (), None, 'raise a test alarm'),
    ('photo', 'Alarm', 'TLGS', 'photo', 1, 0, (), 'telegram_photo', 'send a photo to Telegram'),
    ('record_start', 'Clips', 'RECS', 'record', 1, 0, (), 'record_start',
     'record a clip on the card until record_stop (at most clips.max_s)'),
    ('record_stop', 'Clips', 'RECE', 'record_stop', 1, 0, (), 'record_stop',
     'stop the clip being recorded'),
    ('status', 'Status', 'STAT', 'status', 0, 0, (), None, 'one-line status'),
    ('camera_on', 'Camera and power', 'WCAM', None, 1, 0, (), 'camera_init',
     'initialise the camera'),
    ('camera_off', 'Camera and power', 'SCAM', None, 1, 0, (), 'camera_deinit',
     'de-initialise the camera (power saving)'),
    ('reboot', 'Camera and power', 'RST', 'reboot', 1, 1, (), 'device_restart', 'restart the board'),
    ('sleep', 'Camera and power', 'DSLP', None, 1, 1, ('seconds',), None,
     'deep sleep for N seconds'),
    ('open', 'Remote access', 'UPOP', 'open', 1, 0, (), None,
     'open a router port to the camera; replies the URL'),
    ('close', 'Remote access', 'UPCL', 'close', 1, 0, (), None, 'close the router port'),
    ('telegram_set', 'Telegram', 'TLGC', None, 1, 0, ('token', 'chat_id'), None,
     'store the Telegram bot token and chat'),
)
FRONT_ENDS = {'admin': ADMIN, 'lfcp': LFCP, 'telegram': TELEGRAM}


def lookup(name):
    for c in TABLE:
        if c[NAME] == name:
            return c
    return None


def by_lfcp():
    """LFCP type -> command name."""
    return dict((c[LFCP], c[NAME]) for c in TABLE if c[LFCP])


class Commands:
    """Runs the commands of TABLE whose handlers the composition root registered."""

    def __init__(self, log):
        self._log = log
        self._handlers = {}

    def register(self, name, handler):
        if lookup(name) is None:
            raise ValueError('command %s is not in commands.TABLE' % name)
        self._handlers[name] = handler

    def has(self, name):
        return name in self._handlers

    def available(self, front_end):
        """The registered commands a front end ('admin', 'lfcp', 'telegram') offers, in order."""
        i = FRONT_ENDS[front_end]
        return [c for c in TABLE if c[NAME] in self._handlers and c[i]]

    async def run(self, name, args=None, source='?'):
        handler = self._handlers.get(name)
        if handler is None:
            raise CommandError('unknown command: ' + name)
        self._log.note('command', name, 'from', source)
        try:
            return await handler(args or {})
        except CommandError as e:
            self._log.warn('command', name, 'failed:', e.args[0] if e.args else '')
            raise
        except Exception as e:  # a handler bug becomes a reported failure, not a dead server
            self._log.error('command', name, 'crashed:', repr(e))
            raise CommandError('internal error: ' + repr(e))
