"""The key that guards a server opened to the Internet: outsiders need it, the LAN does not.

While a port forward is open (or one may be left on the router from before a crash), a request
from outside the LAN passes only with the current key, in the query (`?key=`) or in the cookie a
keyed request got back, so the control page's own requests work too. Requests that the router
hairpins or masquerades arrive from the gateway's address: they count as outside.
"""
from firmware.core.secret import same
from firmware.net.addresses import same_lan

COOKIE = 'camkey'


def param(text, name, sep='&'):
    """Value of `name` in a query string (sep '&') or a Cookie header (sep ';'), or None."""
    for part in text.split(sep):
        part = part.strip()
        if part.startswith(name) and part[len(name):len(name) + 1] == '=':
            return part[len(name) + 1:]
    return None


class UrlKey:
    def __init__(self, lan, gateway):
        self.lan = lan            # fn() -> (ip, netmask) of the station interface
        self.gateway = gateway    # fn() -> the router's address or None
        self.key = None           # the current key while a forward is open
        self.pending = False      # a mapping may be left on the router: nobody outside gets in
        self.denied = 0

    @property
    def required(self):
        return self.key is not None or self.pending

    def check(self, target, cookie=None):
        """True if the request target (path?query) or Cookie header carries the current key."""
        k = self.key
        if k is None:
            return False
        q = target.find('?')
        given = param(target[q + 1:], 'key') if q >= 0 else None
        if given is None and cookie:
            given = param(cookie, COOKIE, ';')
        return given is not None and same(given, k)

    def allows(self, peer, target, cookie=None):
        """May a request from `peer` (ip) for `target` pass? LAN peers always may."""
        if not self.required:
            return True
        ip, mask = self.lan()
        if same_lan(peer, ip, mask) and self.gateway() != peer:
            return True
        return self.check(target, cookie)

    def guard(self, req):
        """The web servers' hook for a microdot request: None lets it through, else why not.

        A request let in by the key in its query gets the key back as a cookie."""
        if not self.required:
            return None
        peer = req.client_addr[0] if req.client_addr else ''
        cookie = req.headers.get('Cookie')
        if self.allows(peer, req.url, cookie):
            if self.key and not (cookie and COOKIE + '=' in cookie) and '?' in req.url:
                key = self.key
                req.after_request(lambda rq, res: _set_cookie(res, key))
            return None
        self.denied += 1
        return 'forbidden: use the URL with the key from /open'


def _set_cookie(res, key):
    res.headers['Set-Cookie'] = '%s=%s; Path=/; HttpOnly; SameSite=Strict' % (COOKIE, key)
    return res
