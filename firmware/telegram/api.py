"""Calls to the Bot API, and when the next one may go.

Every call goes through http_client, so a 60 KB upload is a series of short socket writes and the
stream keeps its rate. An answer becomes a verdict: 'ok', 'retry' (after a number of seconds),
'drop' (this chat refuses) or 'auth' (token refused or TLS unusable). 429 makes every caller wait
`retry_after`; other retries back off exponentially. Errors name host:port only, never the URL,
which holds the token.
"""
import asyncio
import json
import time

from firmware.net import http_client

BACKOFF_MAX_S = 60


class BotApi:
    def __init__(self, api_url, credentials, log, ca_file=''):
        self.base = api_url.rstrip('/')
        self.cred = credentials
        self.log = log
        self.ctx, self.ctx_error = self._tls(ca_file)
        self.not_before = time.ticks_ms()  # no call before this (429 or a backoff)
        self.backoff_until = None          # not_before when a backoff (not a 429) set it

    def _tls(self, ca_file):
        if not self.base.startswith('https://'):
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

    async def call(self, method, body, ctype, timeout, max_body=8192):
        """-> (verdict, seconds, result or error text)."""
        if self.ctx_error:
            return 'auth', 0, self.ctx_error
        url = self.base + '/bot' + self.cred.token + '/' + method
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

    def wait(self, seconds, backoff=False):
        """No call for `seconds` (Telegram's 429, or our own backoff)."""
        until = time.ticks_add(time.ticks_ms(), seconds * 1000)
        if time.ticks_diff(until, self.not_before) > 0:
            self.not_before = until
        self.backoff_until = self.not_before if backoff else None

    def end_backoff(self):
        """The uplink is back: a backoff the outage caused ends; a 429 still holds."""
        if self.backoff_until is not None and self.not_before == self.backoff_until:
            self.not_before = time.ticks_ms()
        self.backoff_until = None

    async def ready(self):
        while True:
            wait = time.ticks_diff(self.not_before, time.ticks_ms())
            if wait <= 0:
                return
            await asyncio.sleep_ms(min(wait, 1000))
