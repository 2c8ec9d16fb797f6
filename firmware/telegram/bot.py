"""The Telegram bot: photos out (alarm first), commands in by long polling, without stalling.

Two loops share one bot: the sender empties a bounded priority queue (alarm photos, then command
replies, then requested photos) and the poller asks getUpdates for commands while a token is set.
Every call goes through http_client, so a 60 KB upload is a series of short socket writes and the
stream keeps its rate. 429 makes both loops wait `retry_after`; 5xx, resets and timeouts back off
exponentially, and the item stays queued, so nothing is lost to a transient failure.

Credentials (from config.json, the admin form or LFCP TLGC) change at once and are saved to
telegram.json, which overrides config.json at boot. The token goes to log.secret before anything
else, so no log line, status or error can show it; errors from http_client name host:port only.
"""
import asyncio
import json
import os
import time

from firmware.core import events, store
from firmware.core.commands import HELP as _HELP
from firmware.core.commands import NAME, TABLE, TELEGRAM, BadArgs, CommandError
from firmware.net import http_client

ALARM, MESSAGE, REQUEST, CLIP = 0, 1, 2, 3
KINDS = ('alarm photo', 'message', 'requested photo', 'alarm clip')
MAX_MESSAGES = 8
MAX_CHATS = 8
BACKOFF_MAX_S = 60

HELP = ('help', 'list the commands')


class Item:
    """One outgoing call. chats None: every configured chat, resolved at the first attempt."""

    def __init__(self, kind, chats=None, text=None, jpeg=None, when=None, reason=None, score=None):
        self.kind = kind
        self.chats = chats
        self.text = text
        self.jpeg = jpeg
        self.when = when
        self.reason = reason
        self.score = score
        self.file_id = None  # after the first upload, later chats get the photo by reference


def valid_token(token):
    """BotFather tokens look like 123456789:AA...; checked without echoing the value."""
    if token == '':
        return True
    bot, _, secret = token.partition(':')
    if not bot.isdigit() or len(secret) < 20:
        return False
    for c in secret:
        if not (c.isalpha() or c.isdigit() or c in '-_'):
            return False
    return True


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


def stamp(t):
    y, mo, d, h, mi, s = time.gmtime(int(t))[:6]
    return '%04d-%02d-%02d %02d:%02d:%02d UTC' % (y, mo, d, h, mi, s)


class Telegram:
    def __init__(self, cfg, log, bus, commands, camera, path='telegram.json'):
        tg = cfg.telegram
        self.name = cfg.device.name
        self.log = log
        self.commands = commands
        self.camera = camera
        self.path = path
        self.api = tg.api_url.rstrip('/')
        self.poll_s = tg.poll_s
        self.bound = tg.queue
        self.alarm_slots = tg.alarm_slots
        self.token = tg.token
        self.chats = list(tg.chat_ids)
        log.secret(self.token)
        try:
            saved = store.load(path)
        except ValueError as e:
            saved = None
            log.error('telegram:', e, '- using config.json')
        if saved:
            self.token = saved.get('token', self.token)
            log.secret(self.token)
            self.chats = saved.get('chat_ids', self.chats)
        self.ctx, self.ctx_error = self._tls(tg.ca_file)
        self.queue = []
        self.inflight = None
        self.offset = 0
        self.menu_set = False
        self.gen = 0              # bumps on a credential change, ends the poll in flight
        self.not_before = time.ticks_ms()  # 429: no call before this
        self.delay = 1            # exponential backoff of the sender, seconds
        self.poll_delay = 1
        self.auth_failed = False  # 401: wait for new credentials
        self.refused = []         # foreign chats already told 'not authorised'
        self.stats = {'sent': 0, 'dropped': 0, 'failed': 0, 'retries': 0, 'commands': 0,
                      'refused': 0, 'updates': 0}
        self.last_error = None
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._poll_task = None
        self._flushed = asyncio.Event()
        self.timeouts = {'photo': 30, 'message': 15, 'clip': 120}  # seconds per phase (connect, send, receive)
        self.boundary = 'esp32cam' + ''.join('%02x' % b for b in os.urandom(12))
        self.backoff_until = None  # not_before set by a backoff (not by a 429)
        if bus:
            bus.on(events.ALARM, self.send_alarm)
            bus.on(events.UPLINK, self._on_uplink)
            bus.on(events.ARMED, self.send_armed)

    def _tls(self, ca_file):
        if not self.api.startswith('https://'):
            return None, None
        try:
            if ca_file:
                with open(ca_file, 'rb') as f:
                    return http_client.tls_context(f.read()), None
            return http_client.default_context(), None
        except (OSError, ValueError) as e:
            msg = 'telegram: CA file %s unusable: %s' % (ca_file, e)
            self.log.error(msg)
            return None, msg

    # --- what others call --------------------------------------------------------------------
    def configured(self):
        return bool(self.token) and bool(self.chats)

    def send_alarm(self, event):
        """Bus handler for 'alarm': queue the triggering frame, never blocking the caller."""
        if not self.configured():
            return
        self._push(Item(ALARM, jpeg=event.frame, when=event.time, reason=event.reason,
                        score=event.score))

    def send_armed(self, state, why=''):
        """Bus handler for 'armed': tell the chats when the alarm changed by itself (auto-arm,
        management back); a commanded change is answered where the command came from."""
        if why != 'command' and self.configured():
            self.send_message('%s: alarm %s (%s)' % (self.name, state, why))

    def send_photo(self, reason='request', chat=None):
        """Queue a fresh snapshot (taken when its turn comes) for `chat` or every chat."""
        if not self.configured():
            raise CommandError('Telegram is not configured')
        if reason not in ('request', 'test'):
            raise BadArgs('reason must be request or test')
        ok = self._push(Item(REQUEST, chats=None if chat is None else [chat], reason=reason))
        return 'photo queued' if ok else 'photo dropped: queue full of alarm photos'

    def send_message(self, text, chat=None):
        self._push(Item(MESSAGE, chats=None if chat is None else [chat], text=text[:4000]))

    async def cmd_photo(self, args):
        """Handler of the 'photo' command: args {'reason': 'request'|'test'}."""
        return self.send_photo(args.get('reason', 'request'), args.get('chat_id'))

    async def cmd_set(self, args):
        """Handler of 'telegram_set': args {'token', 'chat_id' (or 'chat_ids')}."""
        token = args.get('token')
        chats = args.get('chat_ids', args.get('chat_id'))
        if token is None and chats is None:
            raise BadArgs('give token and/or chat_id')
        self.set_credentials(self.token if token is None else token,
                             self.chats if chats is None else chats)
        return 'telegram %s' % ('configured' if self.configured() else 'off')

    def set_credentials(self, token, chats):
        """Take effect at once and persist atomically; BadArgs (without the token) if invalid."""
        if not isinstance(token, str):
            raise BadArgs('token must be a string')
        token = token.strip()
        if not valid_token(token):
            raise BadArgs('token: expected <bot id>:<secret> as BotFather gives it')
        self.log.secret(token)  # valid: masked from now on, before any line could carry it
        try:
            chats = parse_chats(chats)
        except ValueError as e:
            raise BadArgs('chat_id: %s' % e)
        try:
            store.save(self.path, {'token': token, 'chat_ids': chats})
        except OSError as e:
            raise CommandError('telegram: cannot save %s: %s' % (self.path, e))
        if token != self.token:
            self.offset = 0
            self.menu_set = False
            self.gen += 1
            if self._poll_task:
                self._poll_task.cancel()
        self.token, self.chats = token, chats
        self.auth_failed = False
        self.refused = []
        self.delay = self.poll_delay = 1
        self.log('telegram: credentials changed,', len(chats), 'chat(s),',
                 'on' if self.configured() else 'off')
        self._changed.set()
        self._wake.set()

    def status(self):
        q = self.queue
        return {
            'configured': self.configured(), 'chats': len(self.chats),
            'polling': self.configured() and self.poll_s > 0 and not self.auth_failed,
            'queued': len(q), 'queued_alarms': len([i for i in q if i.kind == ALARM]),
            'sending': KINDS[self.inflight.kind] if self.inflight else None,
            'auth_failed': self.auth_failed, 'tls_error': self.ctx_error,
            'last_error': self.log.redact(self.last_error) if self.last_error else None,
            'sent': self.stats['sent'], 'dropped': self.stats['dropped'],
            'failed': self.stats['failed'], 'retries': self.stats['retries'],
            'commands': self.stats['commands'], 'refused': self.stats['refused'],
        }

    # --- the queue -----------------------------------------------------------------------------
    def _oldest(self, kind):
        for i in self.queue:
            if i.kind == kind:
                return i
        return None

    def _push(self, item):
        """Bounded insert. Photos: drop the oldest requested one first; an alarm photo only goes
        when at least alarm_slots alarm photos are pending (else the bound stretches for it)."""
        q = self.queue
        if item.kind == MESSAGE:
            msgs = [i for i in q if i.kind == MESSAGE]
            if len(msgs) >= MAX_MESSAGES:
                self._drop(msgs[0], 'too many replies pending')
        elif len([i for i in q if i.kind != MESSAGE]) >= self.bound:
            victim = self._oldest(REQUEST)
            if victim is None:
                if item.kind == REQUEST:
                    self._drop(item, 'queue full of alarm photos')
                    return False
                if len([i for i in q if i.kind == ALARM]) >= self.alarm_slots:
                    victim = self._oldest(ALARM)
            if victim is not None:
                self._drop(victim, 'queue full (%d)' % self.bound)
        q.append(item)
        self._wake.set()
        return True

    def _drop(self, item, why):
        if item in self.queue:
            self.queue.remove(item)
        self.stats['dropped'] += 1
        self.log.warn('telegram: dropped a', KINDS[item.kind], '-', why)

    def _next(self):
        best = None
        for i in self.queue:
            if best is None or i.kind < best.kind:
                best = i
        return best

    # --- Bot API calls -------------------------------------------------------------------------
    async def _call(self, method, body, ctype, timeout, max_body=8192):
        """-> (verdict, seconds, text): verdict 'ok', 'retry' (after seconds), 'drop', 'auth'."""
        if self.ctx_error:
            return 'auth', 0, self.ctx_error
        url = self.api + '/bot' + self.token + '/' + method
        try:
            r = await http_client.request('POST', url, {'Content-Type': ctype}, body, timeout,
                                          self.ctx, max_body)
        except (OSError, ValueError) as e:
            return 'retry', 0, '%s: %s' % (method, e)
        try:
            data = json.loads(r.body)
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        desc = '%s: HTTP %d %s' % (method, r.status, data.get('description', ''))
        if r.status == 200 and data.get('ok'):
            return 'ok', 0, data.get('result')
        if r.status == 429:
            params = data.get('parameters') or {}
            after = params.get('retry_after', 5) if isinstance(params, dict) else 5
            return 'retry', after if isinstance(after, int) and 0 < after < 3600 else 5, desc
        if r.status >= 500 or r.status < 400:
            return 'retry', 0, desc
        if r.status in (401, 404):  # 404: Telegram's answer to a malformed token
            return 'auth', 0, desc
        return 'drop', 0, desc

    def _on_uplink(self, up):
        """The uplink is back: retry now rather than sit out a backoff that the outage caused
        (a wait that Telegram asked for with 429 still holds)."""
        if not up:
            return
        self.delay = 1
        self.poll_delay = 1
        if self.backoff_until is not None and self.not_before == self.backoff_until:
            self.not_before = time.ticks_ms()
        self.backoff_until = None
        self._wake.set()
        self._changed.set()     # the poller too

    def _wait_429(self, seconds):
        until = time.ticks_add(time.ticks_ms(), seconds * 1000)
        if time.ticks_diff(until, self.not_before) > 0:
            self.not_before = until

    async def _respect_429(self):
        while True:
            wait = time.ticks_diff(self.not_before, time.ticks_ms())
            if wait <= 0:
                return
            await asyncio.sleep_ms(min(wait, 1000))

    def _caption(self, item):
        why = item.reason or 'request'
        if why == 'motion':
            why = 'motion, score %s' % item.score
        elif why == 'request':
            why = 'photo on request'
        elif why == 'test':
            why = 'test photo'
        return '%s %s: %s' % (self.name, stamp(item.when), why)

    def _photo_body(self, item, chat):
        b = self.boundary
        pre = ('--%s\r\nContent-Disposition: form-data; name="chat_id"\r\n\r\n%d\r\n'
               '--%s\r\nContent-Disposition: form-data; name="caption"\r\n\r\n%s\r\n'
               '--%s\r\nContent-Disposition: form-data; name="photo"; filename="%s.jpg"\r\n'
               'Content-Type: image/jpeg\r\n\r\n' % (b, chat, b, self._caption(item), b, self.name))
        return (pre, item.jpeg, '\r\n--%s--\r\n' % b), 'multipart/form-data; boundary=' + b

    async def _deliver_one(self, item, chat):
        if item.kind == MESSAGE:
            body = json.dumps({'chat_id': chat, 'text': item.text})
            return await self._call('sendMessage', body, 'application/json', self.timeouts['message'])
        if item.kind == CLIP:
            return await self._deliver_clip(item, chat)
        if item.file_id:
            body = json.dumps({'chat_id': chat, 'photo': item.file_id, 'caption': self._caption(item)})
            return await self._call('sendPhoto', body, 'application/json', self.timeouts['message'])
        body, ctype = self._photo_body(item, chat)
        verdict, after, result = await self._call('sendPhoto', body, ctype, self.timeouts['photo'])
        if verdict == 'ok':
            try:
                item.file_id = result['photo'][-1]['file_id']
            except (KeyError, IndexError, TypeError):
                pass
        return verdict, after, result

    async def _prepare(self, item):
        """Resolve chats and take the snapshot of a requested photo; False if it cannot go."""
        if item.chats is None:
            item.chats = list(self.chats)
        if item.kind == MESSAGE or item.jpeg is not None:
            return True
        if item.kind == CLIP:
            return self._clip_ready(item)
        try:
            item.jpeg = await self.camera.snapshot()
            item.when = time.time()
        except OSError as e:
            self.log.warn('telegram: no photo:', e)
            for chat in item.chats:
                self.send_message('%s: no photo, camera unavailable' % self.name, chat)
            return False
        if not item.jpeg or item.jpeg[:2] != b'\xff\xd8':
            self.log.warn('telegram: no photo: the camera gave no JPEG')
            return False
        return True

    # --- clips (docs/telegram.md: sent as a document, streamed from the card) -----------------
    def send_clip(self, path, info):
        """Queue a clip from the card; it goes after the alarm photos. info: the recorder's dict."""
        secs = info['frames'] / info['fps'] if info.get('fps') else 0
        why = info.get('reason', 'alarm')
        item = Item(CLIP, text=path, when=info.get('time') or time.time(), reason=why)
        item.caption = '%s %s: clip of the %s alarm, %.1f s' % (self.name, stamp(item.when), why, secs)
        return self._push(item)

    def _clip_ready(self, item):
        try:
            item.size = os.stat(item.text)[6]
            return True
        except OSError as e:
            self.log.warn('telegram: no clip:', item.text, e)
            return False

    async def _deliver_clip(self, item, chat):
        if item.file_id:
            body = json.dumps({'chat_id': chat, 'document': item.file_id, 'caption': item.caption})
            return await self._call('sendDocument', body, 'application/json', self.timeouts['message'])
        b = self.boundary
        name = item.text.rsplit('/', 2)
        pre = ('--%s\r\nContent-Disposition: form-data; name="chat_id"\r\n\r\n%d\r\n'
               '--%s\r\nContent-Disposition: form-data; name="caption"\r\n\r\n%s\r\n'
               '--%s\r\nContent-Disposition: form-data; name="document"; filename="%s-%s-%s"\r\n'
               'Content-Type: video/x-msvideo\r\n\r\n' % (b, chat, b, item.caption, b, self.name,
                                                            name[-2], name[-1]))
        body = (pre, http_client.FilePart(item.text, item.size), '\r\n--%s--\r\n' % b)
        verdict, after, result = await self._call('sendDocument', body,
                                                  'multipart/form-data; boundary=' + b,
                                                  self.timeouts['clip'])
        if verdict == 'ok':
            try:
                item.file_id = result['document']['file_id']
            except (KeyError, TypeError):
                pass
        return verdict, after, result

    # --- the sender ----------------------------------------------------------------------------
    async def run_sender(self):
        while True:
            try:
                await self._send_next()
            except Exception as e:  # a bug in one item must not end the sender
                self.log.error('telegram: sender:', repr(e))
                await asyncio.sleep(1)

    async def _send_next(self):
        await self._respect_429()
        item = self._next()
        if item is None or not self.token or self.auth_failed:
            if item is None:
                self._flushed.set()
            self._wake.clear()
            await self._wake.wait()
            return
        self.queue.remove(item)
        self.inflight = item
        try:
            if not await self._prepare(item):
                self.stats['failed'] += 1
                return
            while item.chats:
                chat = item.chats[0]
                verdict, after, result = await self._deliver_one(item, chat)
                if verdict == 'ok':
                    item.chats.pop(0)
                    self.delay = 1
                    continue
                if verdict == 'drop':  # this chat refuses (blocked bot, unknown chat): skip it
                    item.chats.pop(0)
                    self.stats['failed'] += 1
                    self._note(result)
                    continue
                self._note(result)
                if verdict == 'auth':
                    self.auth_failed = True
                    self.log.error('telegram: token refused or TLS unusable; waiting for new credentials')
                else:
                    self.stats['retries'] += 1
                    self._wait_429(after or self.delay)
                    if not after:
                        self.backoff_until = self.not_before
                        self.delay = min(self.delay * 2, BACKOFF_MAX_S)
                self.queue.insert(0, item)  # retried first within its priority
                return
            self.stats['sent'] += 1
        finally:
            self.inflight = None

    def _note(self, text):
        self.last_error = str(text)
        self.log.warn('telegram:', text)

    async def flush(self, timeout_ms=5000):
        """Wait until the queue is empty (or timeout): before a reboot, so replies get out."""
        self._flushed.clear()
        if not self.queue and not self.inflight:
            return True
        self._wake.set()
        try:
            await asyncio.wait_for_ms(self._flushed.wait(), timeout_ms)
            return True
        except asyncio.TimeoutError:
            return False

    # --- the poller ----------------------------------------------------------------------------
    async def run_poller(self):
        while True:
            try:
                await self._poll_once()
            except Exception as e:  # CancelledError is no Exception here: a cancel ends the loop
                self.log.error('telegram: poller:', repr(e))
                await asyncio.sleep(1)

    async def _poll_once(self):
        if not self.token or self.poll_s == 0 or self.auth_failed:
            self._changed.clear()
            await self._changed.wait()
            return
        await self._respect_429()
        if not self.menu_set:
            await self._set_menu()
        gen = self.gen
        self._poll_task = asyncio.create_task(self._get_updates())
        try:
            updates = await self._poll_task
        except asyncio.CancelledError:
            if gen != self.gen:
                return  # credentials changed: poll again with the new token
            raise
        finally:
            self._poll_task = None
        if updates is None:
            # back off, but wake at once when the uplink returns or the credentials change
            d = self.poll_delay
            self.poll_delay = min(d * 2, BACKOFF_MAX_S)
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), d)
            except asyncio.TimeoutError:
                pass
            return
        self.poll_delay = 1
        for u in updates:
            await self._update(u)

    async def _get_updates(self, timeout=None):
        t = self.poll_s if timeout is None else timeout
        body = json.dumps({'offset': self.offset, 'timeout': t, 'limit': 10,
                           'allowed_updates': ['message']})
        verdict, after, result = await self._call('getUpdates', body, 'application/json', t + 10,
                                                  32768)
        if verdict == 'ok' and isinstance(result, list):
            return result
        self._note(result if verdict != 'ok' else 'getUpdates: not a list')
        if verdict == 'auth':
            self.auth_failed = True
            self.log.error('telegram: token refused; waiting for new credentials')
        elif after:
            self._wait_429(after)
        return None

    async def _set_menu(self):
        cmds = [{'command': c, 'description': d} for c, d in self.menu()]
        verdict, after, result = await self._call('setMyCommands', json.dumps({'commands': cmds}),
                                                  'application/json', self.timeouts['message'])
        if verdict == 'ok':
            self.menu_set = True
        else:
            self._note(result)
            if after:
                self._wait_429(after)

    async def _confirm(self):
        """Tell Telegram we have the updates so far (before a reboot would lose them)."""
        await self._get_updates(0)

    async def _update(self, u):
        uid = u.get('update_id') if isinstance(u, dict) else None
        if not isinstance(uid, int):
            return
        if uid < self.offset:
            return  # already handled: never twice
        self.offset = uid + 1
        self.stats['updates'] += 1
        msg = u.get('message')
        if not isinstance(msg, dict):
            return
        chat = (msg.get('chat') or {}).get('id')
        text = msg.get('text')
        if not isinstance(chat, int) or not isinstance(text, str):
            return
        if chat not in self.chats:
            self.stats['refused'] += 1
            self.log.warn('telegram: command from chat', chat, 'refused (not in chat_ids)')
            if chat not in self.refused:
                if len(self.refused) >= 16:
                    self.refused.pop(0)
                self.refused.append(chat)
                self.send_message('not authorised', chat)
            return
        if not text.startswith('/'):
            self.send_message('commands: /help', chat)
            return
        self.stats['commands'] += 1
        await self._room()
        name = text.split()[0][1:].split('@')[0].lower()
        reply = await self._command(name, chat)
        if reply:
            self.send_message(reply, chat)

    async def _room(self):
        """Backpressure: a burst of commands waits for replies to go out (up to 30 s) rather
        than dropping them."""
        for _ in range(300):
            if len([i for i in self.queue if i.kind == MESSAGE]) < MAX_MESSAGES:
                return
            await asyncio.sleep_ms(100)

    def menu(self):
        """(bot command, help) of every command the table offers to Telegram, then /help."""
        return [(c[TELEGRAM], c[_HELP]) for c in self.commands.available('telegram')] + [HELP]

    async def _command(self, name, chat):
        if name in ('help', 'start'):
            return '\n'.join('/%s - %s' % (c, d) for c, d in self.menu())
        if name == 'photo':
            try:
                if self.commands.has('photo'):
                    await self.commands.run('photo', {'reason': 'request', 'chat_id': chat},
                                            'telegram')
                else:
                    self.send_photo('request', chat)
                return None  # the photo is the answer
            except CommandError as e:
                return 'photo failed: %s' % (e.args[0] if e.args else 'error')
        asked, name = name, None
        for c in TABLE:
            if c[TELEGRAM] == asked:
                name = c[NAME]
        if name is None:
            return 'unknown command /%s, try /help' % asked
        if not self.commands.has(name):
            return '/%s: not available' % asked
        if name == 'reboot':
            await self._confirm()  # else the /reboot comes back after the restart
            self.send_message('%s: rebooting' % self.name, chat)
            await self.flush()
        try:
            reply = await self.commands.run(name, {}, 'telegram')
            return None if name == 'reboot' else reply
        except CommandError as e:
            return '/%s failed: %s' % (name, e.args[0] if e.args else 'error')
