"""Port 8080: device status and actions (reboot, camera, sleep, arm, photo...) for the owner.

Everything here needs HTTP Basic auth with admin.user/admin.password from config.json; with no
password configured the server only says how to enable it. Actions are POSTs that call the command
layer, the same one LFCP and Telegram use; a POST from a page of another origin (or a browser
POST with no Origin at all) is refused so a browser with cached credentials cannot be driven by a
foreign site. Wrong passwords are throttled per client and globally (web/access.py).
"""
import json
import sys

from microdot import Microdot, Response

from firmware.core import clock
from firmware.core import commands as table
from firmware.core.commands import BadArgs, CommandError
from firmware.web import common as web
from firmware.web.access import Login


class AdminServer:
    def __init__(self, cfg, commands, status, log, lazy=None, photo=None):
        self.user = cfg.user
        self.password = cfg.password
        self.login = Login(cfg.user, cfg.password)
        self.commands = commands
        self.status = status        # fn() -> dict of the whole device's status
        self.log = log
        self.denied = 0
        log.secret(cfg.password)
        self.app = app = Microdot()
        web.common(app, log)

        @app.before_request
        async def auth(req):
            return self.check(req)

        @app.route('/')
        async def index(req):
            return web.page('admin.html')

        @app.route('/status')
        async def status_json(req):
            return Response(json.dumps(self.status()), 200, {'Content-Type': 'application/json'})

        @app.route('/log')
        async def log_lines(req):     # [[time, level I/W/E, text], ...], oldest first
            return Response([[clock.unix(l[0]), l[1], l[2]] for l in log.tail(log.max)])

        @app.route('/alarm.jpg')
        async def alarm_photo(req):
            jpeg = photo() if photo else None    # the latest alarm's frame, sent without a copy
            if not jpeg:
                return web.error(404, 'no alarm photo since the last restart')
            return web.jpeg(req, jpeg, 'alarm.jpg')

        @app.route('/commands')
        async def command_list(req):
            return Response([{'name': c[table.NAME], 'help': c[table.HELP],
                              'group': c[table.GROUP], 'args': c[table.ARGS],
                              'destructive': bool(c[table.DESTRUCTIVE])}
                             for c in self.commands.available('admin')])

        @app.route('/action/<name>', methods=['POST'])
        async def action(req, name):
            c = table.lookup(name)
            if c is None or not c[table.ADMIN] or not self.commands.has(name):
                return web.error(404, 'action %r is not available' % name)
            args = req.json if (req.content_type or '').startswith('application/json') else req.form
            if args is not None and not isinstance(args, dict):
                return web.error(400, 'arguments must be a form or a JSON object')
            args = dict((k, args.get(k)) for k in args) if args else {}   # one value per name
            try:
                text = await self.commands.run(name, args, 'http')
            except BadArgs as e:
                return web.error(400, e.args[0])
            except CommandError as e:
                return web.error(503, e.args[0])
            return Response({'ok': True, 'result': text or 'done'})

        for top in lazy or ():
            # {'settings': (module, ctx), ...}: /settings... and /update are served by modules
            # loaded for the request and dropped after it: no heap between requests
            self._lazy(app, top, lazy[top])

    def _lazy(self, app, top, spec):
        async def serve(req, rest=''):
            __import__(spec[0])
            try:
                return await sys.modules[spec[0]].handle(req, top + ('/' + rest if rest else ''),
                                                          spec[1])
            finally:
                parent, _, leaf = spec[0].rpartition('.')
                sys.modules.pop(spec[0], None)
                if hasattr(sys.modules[parent], leaf):
                    delattr(sys.modules[parent], leaf)

        app.route('/' + top, methods=['GET', 'POST'])(serve)
        app.route('/' + top + '/<path:rest>', methods=['GET', 'POST'])(serve)

    def check(self, req):
        if not self.password:
            return web.error(403, 'admin is disabled: set admin.password (8+ characters) in config.json')
        ok = self.login.check(req)
        if isinstance(ok, int):
            return web.error(429, 'too many wrong passwords: try again in %d s' % ok,
                             {'Retry-After': str(ok)})
        if ok != 'ok':
            self.denied += 1
            return web.error(401, 'authentication required',
                             {'WWW-Authenticate': 'Basic realm="esp32cam-alarm admin"'})
        if req.method == 'POST' and not web.same_origin(req):
            return web.error(403, 'cross-origin request refused: a POST must come from this '
                             'page (Origin http://%s) or from a client that is not a browser'
                             % req.headers.get('Host', ''))
        return None
