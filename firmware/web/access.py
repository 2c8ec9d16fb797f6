"""Who may do what on the web servers: the admin login with its brute-force throttling, and
the gate in front of the control port's camera changes.

The login: each client address gets `FREE_TRIES` wrong guesses; after that it must wait before
its next guess is even checked: 1 s, then 2, 4 ... up to `MAX_WAIT_S`, doubling with every further wrong
guess (a success forgets the address). Addresses are cheap on a LAN, so all clients together
have a global cap as well: more than `GLOBAL_FAILS` wrong guesses within `WINDOW_S` and every
login waits until the window ends. A throttled request is answered 429 with Retry-After and costs
no password check. Passwords are compared as SHA-256 digests (core/secret.py), so neither where a
guess differs nor its length shows in the time.

The control gate: CameraWebServer lets anyone on the network change anything, and so does this
port while the alarm is disarmed (existing clients keep working). While armed, a change could blind the alarm
(a frame size flipped every half second kept the detector in warm-up; a camera turned dark
never alarms), so only the variables listed in `control.open` may change without the admin
login; any other needs HTTP Basic auth with admin.user/admin.password (throttled like the admin
server's). A browser request sent for a page of another site is refused whatever the state: a
cross-site <img> must not drive the camera. Every change is logged with where it came from.
"""
import binascii
import time

from firmware.core import aio
from firmware.core.secret import same
from firmware.web import common as web

FREE_TRIES = 3
MAX_WAIT_S = 300
GLOBAL_FAILS = 30
WINDOW_S = 60
CLIENTS = 32        # addresses remembered; the oldest is forgotten first


class Login:
    def __init__(self, user, password):
        self.user = user
        self.password = password
        self.clients = {}       # host -> [failures, ticks_ms it waits until, last failure]
        self.failed = 0         # wrong guesses ever
        self.throttled = 0      # requests refused without a check
        self.window = time.ticks_ms()
        self.window_fails = 0

    def wait_s(self, host):
        """Seconds `host` must still wait before a guess is checked (0: go ahead)."""
        now = time.ticks_ms()
        if time.ticks_diff(now, self.window) >= WINDOW_S * 1000:
            self.window = now
            self.window_fails = 0
        wait = 0
        if self.window_fails >= GLOBAL_FAILS:
            wait = WINDOW_S * 1000 - time.ticks_diff(now, self.window)
        c = self.clients.get(host)
        if c:
            wait = max(wait, time.ticks_diff(c[1], now))
        return (wait + 999) // 1000 if wait > 0 else 0

    def check(self, req):
        """'ok', 'none' (no credentials sent), 'bad', or the seconds to wait (an int)."""
        h = req.headers.get('Authorization', '')
        if not h.startswith('Basic '):
            return 'none'
        host = aio.host_of(req.client_addr)
        wait = self.wait_s(host)
        if wait:
            self.throttled += 1
            return wait
        ok = False
        try:
            user, _, pw = binascii.a2b_base64(h[6:]).decode().partition(':')
            ok = same(user, self.user) & same(pw, self.password)
        except (ValueError, UnicodeError):
            pass
        if ok:
            self.clients.pop(host, None)
            return 'ok'
        self._fail(host)
        return 'bad'

    def _fail(self, host):
        self.failed += 1
        self.window_fails += 1
        now = time.ticks_ms()
        c = self.clients.get(host) or [0, now, now]
        c[0] += 1
        c[2] = now
        if c[0] >= FREE_TRIES:
            c[1] = time.ticks_add(now, 1000 * min(MAX_WAIT_S, 1 << min(c[0] - FREE_TRIES, 9)))
        self.clients[host] = c
        if len(self.clients) > CLIENTS:     # forget the address that failed longest ago
            old = None
            for k, v in self.clients.items():
                if old is None or time.ticks_diff(v[2], self.clients[old][2]) < 0:
                    old = k
            del self.clients[old]

    def status(self):
        now = time.ticks_ms()
        return {'failed': self.failed, 'throttled': self.throttled,
                'clients_waiting': sum(1 for c in self.clients.values()
                                       if time.ticks_diff(c[1], now) > 0),
                'global_wait_s': self.wait_s(None) if self.window_fails >= GLOBAL_FAILS else 0}


class ControlGate:
    def __init__(self, open_vars, armed, login, log):
        self.open = open_vars       # may change without login even while armed
        self.armed = armed          # fn() -> bool
        self.login = login          # web.login.Login, or None when admin has no password
        self.log = log
        self.refused = 0

    def __call__(self, req, var, val):
        """None when the change may go ahead (and is logged), else the refusal to answer."""
        who = aio.host_of(req.client_addr)
        if web.cross_site(req):
            return self._refuse(403, var, val, who, 'a page of another site may not change the camera')
        user = ''
        if self.armed() and var not in self.open:
            ok = self.login.check(req) if self.login else 'none'
            if isinstance(ok, int):
                return self._refuse(429, var, val, who, 'too many wrong passwords: try again '
                                    'in %d s' % ok, {'Retry-After': str(ok)})
            if ok != 'ok':
                return self._refuse(401, var, val, who,
                                    'the alarm is armed: changing %s needs the admin login' % var,
                                    {'WWW-Authenticate': 'Basic realm="esp32cam-alarm admin"'}
                                    if self.login else None)
            user = ' (admin)'
        self.log('camera:', var, '=', val, 'from control port,', who + user)
        return None

    def _refuse(self, status, var, val, who, why, headers=None):
        self.refused += 1
        self.log.warn('camera:', var, '=', val, 'from', who, 'refused:', why)
        return web.error(status, why, headers)
