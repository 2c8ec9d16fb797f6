"""Port 80: the control page and the Arduino CameraWebServer API (/status, /control, /capture).

Existing ESP32-CAM clients and integrations talk to these paths, so names, values and error
codes follow CameraWebServer: missing var or val is 404, an unknown var is 500, success is an empty
200; a value out of range is a 400 that says which range; a variable this camera driver cannot
apply is a 501 that says so (and is not in /status).
"""
from microdot import Microdot, Response

from firmware.web import common as web


class ControlServer:
    def __init__(self, cam, http_cfg, log, guard=None, gate=None):
        self.cam = cam
        self.gate = gate            # web.gate.ControlGate: who may change what, and the log
        self.log = log
        self.ports = {'stream': http_cfg.stream_port, 'admin': http_cfg.admin_port}
        self.app = app = Microdot()
        web.common(app, log, guard)

        @app.route('/')
        async def index(req):
            return web.page('control.html')

        @app.route('/ports')
        async def ports(req):
            return Response(self.ports)

        @app.route('/status')
        async def status(req):
            return Response(self.cam.cws_status())

        @app.route('/control')
        async def control(req):
            var = req.args.get('var')
            val = req.args.get('val')
            if var is None or val is None:
                return web.error(404, 'control needs var and val')
            try:
                val = int(val)
            except ValueError:
                return web.error(400, 'val must be an integer, got %r' % val)
            refused = self.gate(req, var, val) if self.gate else None
            if refused:
                return refused
            try:
                self.cam.apply(var, val)
            except KeyError:
                return web.error(500, 'unknown var %r' % var)
            except NotImplementedError as e:
                return web.error(501, e.args[0])
            except ValueError as e:
                return web.error(400, e.args[0])
            if not self.gate:
                self.log('control', var, '=', val)
            return Response('')

        @app.route('/capture')
        async def capture(req):
            return await web.snapshot(req, self.cam, 'capture.jpg', cws=True)
