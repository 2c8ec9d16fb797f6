"""The bot's token and allowed chats: from config.json, overridden by telegram.json once set.

Credentials set from the admin form or LFCP TLGC take effect at once and are saved atomically to
telegram.json. A telegram.json that is not what this module writes (edited by hand, cut short) is
moved aside to telegram.json.bad with a log line, and config.json's values are used: the bot
starts, never the traceback. The token goes to log.secret before anything else.
"""
import os

from firmware.core import store
from firmware.core.secret import valid_token

MAX_CHATS = 8


def parse_chats(value):
    """Chat ids from an int, a string ("123, -100456") or a list; ValueError on anything else."""
    if isinstance(value, (list, tuple)):
        items = value
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [value]
    elif isinstance(value, str):
        items = [v for v in value.replace(';', ',').replace(' ', ',').split(',') if v]
    else:
        raise ValueError('chat ids must be integers')
    out = []
    for v in items:
        if isinstance(v, bool):
            raise ValueError('chat ids must be integers')
        try:
            n = int(v)
        except (TypeError, ValueError):
            raise ValueError('chat id %r is not an integer' % (v,))
        if n not in out:
            out.append(n)
    if len(out) > MAX_CHATS:
        raise ValueError('at most %d chats' % MAX_CHATS)
    return out


def check(saved):
    """(token, chats) of a telegram.json's content; ValueError naming what is wrong."""
    if not isinstance(saved, dict):
        raise ValueError('not an object')
    token = saved.get('token')
    if not isinstance(token, str) or not valid_token(token):
        raise ValueError('token: expected <bot id>:<secret> as a string')
    return token, parse_chats(saved.get('chat_ids', []))


class Credentials:
    def __init__(self, cfg, log, path='telegram.json'):
        self.log = log
        self.path = path
        self.token = cfg.token
        self.chats = list(cfg.chat_ids)
        log.secret(self.token)
        try:
            saved = store.load(path)
            if saved is not None:
                self.token, self.chats = check(saved)
                log.secret(self.token)
        except ValueError as e:
            self._set_aside(e)

    def _set_aside(self, why):
        try:
            os.rename(self.path, self.path + '.bad')
        except OSError:
            pass
        self.log.error('telegram: %s unusable (%s): moved to %s.bad, using config.json' % (
            self.path, why, self.path))

    def configured(self):
        return bool(self.token) and bool(self.chats)

    def set(self, token, chats):
        """Validate, save atomically, then take effect; ValueError (without the token) or
        OSError if the file cannot be written. True when the token changed."""
        if not isinstance(token, str):
            raise ValueError('token must be a string')
        token = token.strip()
        if not valid_token(token):
            raise ValueError('token: expected <bot id>:<secret> as BotFather gives it')
        self.log.secret(token)  # valid: masked from now on, before any line could carry it
        try:
            chats = parse_chats(chats)
        except ValueError as e:
            raise ValueError('chat_id: %s' % e)
        store.save(self.path, {'token': token, 'chat_ids': chats})
        changed = token != self.token
        self.token, self.chats = token, chats
        return changed
