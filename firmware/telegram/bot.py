"""The Telegram bot: photos out (alarm first), commands in by long polling, without stalling.

The pieces, each in its module: the credentials (credentials.py), the queue of what waits to go
(outbox.py), the Bot API calls and their pacing (api.py), the poller that takes commands
(poller.py). This module wires them and runs the sender, which empties the outbox: 5xx, resets
and timeouts back off exponentially and the item stays queued, so nothing is lost to a transient
failure; a chat that refuses is skipped.
"""
import asyncio
import json
import os
import time

from firmware.core import clock, events
from firmware.core.commands import BadArgs, CommandError
from firmware.net import http_client
from firmware.telegram.api import BACKOFF_MAX_S, BotApi
from firmware.telegram.credentials import Credentials
from firmware.telegram.outbox import ALARM, CLIP, KINDS, MESSAGE, REQUEST, Item, Outbox
from firmware.telegram.poller import Poller


def stamp(t):
    return clock.text(t)   # 'time not set' until NTP has set the board's clock


class Telegram:
    def __init__(self, cfg, log, bus, commands, camera, path='telegram.json'):
        tg = cfg.telegram
        self.name = cfg.device.name
        self.log = log
        self.commands = commands
        self.camera = camera
        self.cred = Credentials(tg, log, path)
        self.api = BotApi(tg.api_url, self.cred, log, tg.ca_file)
        self.outbox = Outbox(log, tg.queue, tg.alarm_slots)
        self.inflight = None
        self.delay = 1            # exponential backoff of the sender, seconds
        self.auth_failed = False  # 401: wait for new credentials
        self.stats = {'sent': 0, 'failed': 0, 'retries': 0, 'commands': 0, 'refused': 0,
                      'updates': 0}
        self.last_error = None
        self._flushed = asyncio.Event()
        self.timeouts = {'photo': 30, 'message': 15, 'clip': 120}  # seconds per phase (connect, send, receive)
        self.boundary = 'esp32cam' + ''.join('%02x' % b for b in os.urandom(12))
        self.poller = Poller(self, tg.poll_s)
        if bus:
            bus.on(events.ALARM, self.send_alarm)
            bus.on(events.UPLINK, self._on_uplink)
            bus.on(events.CLOCK, lambda: self._on_uplink(True))   # verified TLS can start now
            bus.on(events.ARMED, self.send_armed)

    # --- what others call --------------------------------------------------------------------
    def configured(self):
        return self.cred.configured()

    def menu(self):
        return self.poller.menu()

    def send_alarm(self, event):
        """Bus handler for 'alarm': queue the triggering frame, never blocking the caller."""
        if not self.configured():
            return
        self.outbox.push(Item(ALARM, jpeg=event.frame, when=event.time, reason=event.reason,
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
        ok = self.outbox.push(Item(REQUEST, chats=None if chat is None else [chat], reason=reason))
        return 'photo queued' if ok else 'photo dropped: queue full of alarm photos'

    def send_message(self, text, chat=None):
        self.outbox.push(Item(MESSAGE, chats=None if chat is None else [chat], text=text[:4000]))

    async def cmd_photo(self, args):
        """Handler of the 'photo' command: args {'reason': 'request'|'test'}."""
        return self.send_photo(args.get('reason', 'request'), args.get('chat_id'))

    async def cmd_set(self, args):
        """Handler of 'telegram_set': args {'token', 'chat_id' (or 'chat_ids')}."""
        token = args.get('token')
        chats = args.get('chat_ids', args.get('chat_id'))
        if token is None and chats is None:
            raise BadArgs('give token and/or chat_id')
        self.set_credentials(self.cred.token if token is None else token,
                             self.cred.chats if chats is None else chats)
        return 'telegram %s' % ('configured' if self.configured() else 'off')

    def set_credentials(self, token, chats):
        """Take effect at once and persist atomically; BadArgs (without the token) if invalid."""
        try:
            changed = self.cred.set(token, chats)
        except ValueError as e:
            raise BadArgs(e.args[0])
        except OSError as e:
            raise CommandError('telegram: cannot save %s: %s' % (self.cred.path, e))
        if changed:
            self.poller.new_token()
        self.poller.refused = []
        self.poller.delay = 1
        self.auth_failed = False
        self.delay = 1
        self.log('telegram: credentials changed,', len(self.cred.chats), 'chat(s),',
                 'on' if self.configured() else 'off')
        self.poller.changed.set()
        self.outbox.wake.set()

    def status(self):
        return {
            'configured': self.configured(), 'chats': len(self.cred.chats),
            'polling': self.poller.polling(),
            'queued': len(self.outbox), 'queued_alarms': self.outbox.count(ALARM),
            'sending': KINDS[self.inflight.kind] if self.inflight else None,
            'auth_failed': self.auth_failed, 'tls_error': self.api.ctx_error,
            'last_error': self.log.redact(self.last_error) if self.last_error else None,
            'sent': self.stats['sent'], 'dropped': self.outbox.dropped,
            'failed': self.stats['failed'], 'retries': self.stats['retries'],
            'commands': self.stats['commands'], 'refused': self.stats['refused'],
        }

    def note(self, text):
        self.last_error = str(text)
        self.log.warn('telegram:', text)

    def _on_uplink(self, up):
        """The uplink is back: retry now rather than sit out a backoff that the outage caused
        (a wait that Telegram asked for with 429 still holds)."""
        if not up:
            return
        self.delay = 1
        self.poller.delay = 1
        self.api.end_backoff()
        self.outbox.wake.set()
        self.poller.changed.set()

    async def run_poller(self):
        await self.poller.run()

    async def flush(self, timeout_ms=5000):
        """Wait until the queue is empty (or timeout): before a reboot, so replies get out."""
        self._flushed.clear()
        if not len(self.outbox) and not self.inflight:
            return True
        self.outbox.wake.set()
        try:
            await asyncio.wait_for_ms(self._flushed.wait(), timeout_ms)
            return True
        except asyncio.TimeoutError:
            return False

    # --- the sender ----------------------------------------------------------------------------
    async def run_sender(self):
        while True:
            try:
                await self._send_next()
            except Exception as e:  # a bug in one item must not end the sender
                self.log.error('telegram: sender:', repr(e))
                await asyncio.sleep(1)

    async def _send_next(self):
        await self.api.ready()
        if not self.cred.token or self.auth_failed:
            item = None
        else:
            item = self.outbox.take()
        if item is None:
            if not len(self.outbox):
                self._flushed.set()
            self.outbox.wake.clear()
            await self.outbox.wake.wait()
            return
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
                    self.note(result)
                    continue
                self.note(result)
                if verdict == 'auth':
                    self.auth_failed = True
                    self.log.error('telegram: token refused or TLS unusable; waiting for new credentials')
                else:
                    self.stats['retries'] += 1
                    self.api.wait(after or self.delay, backoff=not after)
                    if not after:
                        self.delay = min(self.delay * 2, BACKOFF_MAX_S)
                self.outbox.put_back(item)
                return
            self.stats['sent'] += 1
        finally:
            self.inflight = None

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
        call = self.api.call
        if item.kind == MESSAGE:
            body = json.dumps({'chat_id': chat, 'text': item.text})
            return await call('sendMessage', body, 'application/json', self.timeouts['message'])
        if item.kind == CLIP:
            return await self._deliver_clip(item, chat)
        if item.file_id:
            body = json.dumps({'chat_id': chat, 'photo': item.file_id, 'caption': self._caption(item)})
            return await call('sendPhoto', body, 'application/json', self.timeouts['message'])
        body, ctype = self._photo_body(item, chat)
        verdict, after, result = await call('sendPhoto', body, ctype, self.timeouts['photo'])
        if verdict == 'ok':
            try:
                item.file_id = result['photo'][-1]['file_id']
            except (KeyError, IndexError, TypeError):
                pass
        return verdict, after, result

    async def _prepare(self, item):
        """Resolve chats and take the snapshot of a requested photo; False if it cannot go."""
        if item.chats is None:
            item.chats = list(self.cred.chats)
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
        return self.outbox.push(item)

    def _clip_ready(self, item):
        try:
            item.size = os.stat(item.text)[6]
            return True
        except OSError as e:
            self.log.warn('telegram: no clip:', item.text, e)
            return False

    async def _deliver_clip(self, item, chat):
        call = self.api.call
        if item.file_id:
            body = json.dumps({'chat_id': chat, 'document': item.file_id, 'caption': item.caption})
            return await call('sendDocument', body, 'application/json', self.timeouts['message'])
        b = self.boundary
        name = item.text.rsplit('/', 2)
        pre = ('--%s\r\nContent-Disposition: form-data; name="chat_id"\r\n\r\n%d\r\n'
               '--%s\r\nContent-Disposition: form-data; name="caption"\r\n\r\n%s\r\n'
               '--%s\r\nContent-Disposition: form-data; name="document"; filename="%s-%s-%s"\r\n'
               'Content-Type: video/x-msvideo\r\n\r\n' % (b, chat, b, item.caption, b, self.name,
                                                            name[-2], name[-1]))
        body = (pre, http_client.FilePart(item.text, item.size), '\r\n--%s--\r\n' % b)
        verdict, after, result = await call('sendDocument', body,
                                            'multipart/form-data; boundary=' + b,
                                            self.timeouts['clip'])
        if verdict == 'ok':
            try:
                item.file_id = result['document']['file_id']
            except (KeyError, TypeError):
                pass
        return verdict, after, result
