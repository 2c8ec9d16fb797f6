"""Commands in: long polling of getUpdates, only from the allowed chats, through the command layer.

The bot's menu (setMyCommands) and /help come from the command table, so a command declared there
shows up here without an edit. Each update is handled once (the offset moves before the command
runs); a /reboot confirms the updates so far first, or it would come back after the restart.
"""
import asyncio
import json

from firmware.core.commands import HELP, NAME, TABLE, TELEGRAM, CommandError
from firmware.telegram.api import BACKOFF_MAX_S
from firmware.telegram.outbox import MAX_MESSAGES, MESSAGE

HELP_ROW = ('help', 'list the commands')


class Poller:
    def __init__(self, bot, poll_s):
        self.bot = bot
        self.api = bot.api
        self.cred = bot.cred
        self.log = bot.log
        self.commands = bot.commands
        self.poll_s = poll_s
        self.offset = 0
        self.menu_set = False
        self.gen = 0              # bumps on a credential change, ends the poll in flight
        self.delay = 1
        self.refused = []         # foreign chats already told 'not authorised'
        self.changed = asyncio.Event()
        self._task = None

    def polling(self):
        return self.cred.configured() and self.poll_s > 0 and not self.bot.auth_failed

    def new_token(self):
        """Credentials changed: start over with the new token, at once."""
        self.offset = 0
        self.menu_set = False
        self.gen += 1
        if self._task:
            self._task.cancel()

    def menu(self):
        """(bot command, help) of every command the table offers to Telegram, then /help."""
        return [(c[TELEGRAM], c[HELP]) for c in self.commands.available('telegram')] + [HELP_ROW]

    async def run(self):
        while True:
            try:
                await self._once()
            except Exception as e:  # CancelledError is no Exception here: a cancel ends the loop
                self.log.error('telegram: poller:', repr(e))
                await asyncio.sleep(1)

    async def _once(self):
        if not self.cred.token or self.poll_s == 0 or self.bot.auth_failed:
            self.changed.clear()
            await self.changed.wait()
            return
        await self.api.ready()
        if not self.menu_set:
            await self._set_menu()
        gen = self.gen
        self._task = asyncio.create_task(self._get_updates())
        try:
            updates = await self._task
        except asyncio.CancelledError:
            if gen != self.gen:
                return  # credentials changed: poll again with the new token
            raise
        finally:
            self._task = None
        if updates is None:
            # back off, but wake at once when the uplink returns or the credentials change
            d = self.delay
            self.delay = min(d * 2, BACKOFF_MAX_S)
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), d)
            except asyncio.TimeoutError:
                pass
            return
        self.delay = 1
        for u in updates:
            await self._update(u)

    async def _get_updates(self, timeout=None):
        t = self.poll_s if timeout is None else timeout
        body = json.dumps({'offset': self.offset, 'timeout': t, 'limit': 10,
                           'allowed_updates': ['message']})
        verdict, after, result = await self.api.call('getUpdates', body, 'application/json',
                                                     t + 10, 32768)
        if verdict == 'ok' and isinstance(result, list):
            return result
        self.bot.note(result if verdict != 'ok' else 'getUpdates: not a list')
        if verdict == 'auth':
            self.bot.auth_failed = True
            self.log.error('telegram: token refused; waiting for new credentials')
        elif after:
            self.api.wait(after)
        return None

    async def _set_menu(self):
        cmds = [{'command': c, 'description': d} for c, d in self.menu()]
        verdict, after, result = await self.api.call('setMyCommands',
                                                     json.dumps({'commands': cmds}),
                                                     'application/json', self.bot.timeouts['message'])
        if verdict == 'ok':
            self.menu_set = True
        else:
            self.bot.note(result)
            if after:
                self.api.wait(after)

    async def confirm(self):
        """Tell Telegram we have the updates so far (before a reboot would lose them)."""
        await self._get_updates(0)

    async def _update(self, u):
        uid = u.get('update_id') if isinstance(u, dict) else None
        if not isinstance(uid, int):
            return
        if uid < self.offset:
            return  # already handled: never twice
        self.offset = uid + 1
        stats = self.bot.stats
        stats['updates'] += 1
        msg = u.get('message')
        if not isinstance(msg, dict):
            return
        chat = (msg.get('chat') or {}).get('id')
        text = msg.get('text')
        if not isinstance(chat, int) or not isinstance(text, str):
            return
        if chat not in self.cred.chats:
            stats['refused'] += 1
            self.log.warn('telegram: command from chat', chat, 'refused (not in chat_ids)')
            if chat not in self.refused:
                if len(self.refused) >= 16:
                    self.refused.pop(0)
                self.refused.append(chat)
                self.bot.send_message('not authorised', chat)
            return
        if not text.startswith('/'):
            self.bot.send_message('commands: /help', chat)
            return
        stats['commands'] += 1
        await self._room()
        name = text.split()[0][1:].split('@')[0].lower()
        reply = await self._command(name, chat)
        if reply:
            self.bot.send_message(reply, chat)

    async def _room(self):
        """Backpressure: a burst of commands waits for replies to go out (up to 30 s) rather
        than dropping them."""
        for _ in range(300):
            if self.bot.outbox.count(MESSAGE) < MAX_MESSAGES:
                return
            await asyncio.sleep_ms(100)

    async def _command(self, asked, chat):
        if asked in ('help', 'start'):
            return '\n'.join('/%s - %s' % (c, d) for c, d in self.menu())
        name = None
        for c in TABLE:
            if c[TELEGRAM] == asked:
                name = c[NAME]
        if name is None:
            return 'unknown command /%s, try /help' % asked
        if name == 'photo':
            try:
                if self.commands.has('photo'):
                    await self.commands.run('photo', {'reason': 'request', 'chat_id': chat},
                                            'telegram')
                else:
                    self.bot.send_photo('request', chat)
                return None  # the photo is the answer
            except CommandError as e:
                return 'photo failed: %s' % (e.args[0] if e.args else 'error')
        if not self.commands.has(name):
            return '/%s: not available' % asked
        if name == 'reboot':
            await self.confirm()  # else the /reboot comes back after the restart
            self.bot.send_message('%s: rebooting' % self.bot.name, chat)
            await self.bot.flush()
        try:
            reply = await self.commands.run(name, {}, 'telegram')
            return None if name == 'reboot' else reply
        except CommandError as e:
            return '/%s failed: %s' % (name, e.args[0] if e.args else 'error')
