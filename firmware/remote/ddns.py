"""Telegram as DDNS: tell the owner the camera's new URL when the router's address changes.

The router's own idea of its external address comes from UPnP; an optional echo service says what
the world sees, which tells a router behind another NAT (double NAT) apart: then the URL cannot
work from outside, and the owner is told so rather than left guessing.
"""
from firmware.net.addresses import _ip4
from firmware.net.http_client import request


def first_ipv4(text):
    """The first dotted IPv4 address in an echo service's answer (plain text or JSON)."""
    i, n = 0, len(text)
    while i < n:
        if text[i].isdigit():
            j = i
            while j < n and (text[j].isdigit() or text[j] == '.'):
                j += 1
            if _ip4(text[i:j]) is not None:
                return text[i:j]
            i = j
        i += 1
    return None


class AddressWatch:
    def __init__(self, echo_url, log, notify):
        self.echo_url = echo_url
        self.log = log
        self.notify = notify  # fn(text), may be async: texts the allowed chats
        self.external = ''    # what the router says
        self.public = ''      # what the echo service says

    async def changed(self, igd, url):
        """Ask the router (and the echo service) again; text the owner what changed.
        `url` is fn() -> the camera's URL with the address just learnt."""
        ext = await igd.external_ip()
        moved = ext and ext != self.external
        if moved:
            self.log('upnp: external address changed')
            self.external = ext
        old, warn = self.public, []
        await self.check_public(warn)
        lines = ['Camera address changed: ' + url()] if moved else []
        if moved or self.public != old:
            lines.extend(warn)
        if lines:
            await self.tell('\n'.join(lines))

    async def check_public(self, lines):
        """Ask the echo service (if any) for the address the world sees; warn on double NAT."""
        if not self.echo_url:
            return
        try:
            r = await request('GET', self.echo_url, timeout=8, max_body=1024)
            ip = first_ipv4(r.body.decode()) if r.status == 200 else None
        except Exception as e:
            self.log.warn('upnp: echo service failed:', repr(e))
            return
        if not ip:
            return
        self.public = ip
        if ip != self.external:
            lines.append('Warning: the public address is %s but the router says %s: the router is '
                         'behind another NAT (double NAT); the URL may not work from outside.'
                         % (ip, self.external or 'nothing'))

    async def tell(self, text):
        if self.notify is None:
            return
        try:
            r = self.notify(text)
            if r is not None and hasattr(r, 'send'):
                await r
        except Exception as e:
            self.log.warn('upnp: notify failed:', repr(e))
