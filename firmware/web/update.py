"""Admin routes of the update over the air: POST /update installs a bundle, GET /update says
where updates stand. Mounted on the admin app, so behind its authentication.

The bundle is read from the socket in 1 KB slices straight to the flash (firmware/ota/install.py),
never whole in memory. A refused bundle is read to its end before the answer, so the client sees
the reason instead of a reset connection.
"""
import asyncio

from microdot import Response

from firmware.core import aio
from firmware.web import common as web

BUNDLE_MAX = 4 * 1024 * 1024     # the ESP32-CAM's whole flash


def _body_reader(req):
    """async readinto(buf) over the request body, read already (small) or still on the socket."""
    if not req.body:
        return req.stream.readinto
    src = req.body
    pos = [0]

    async def read(buf):
        n = min(len(buf), len(src) - pos[0])
        buf[:n] = src[pos[0]:pos[0] + n]
        pos[0] += n
        return n
    return read


async def _drain(read, left):
    buf = bytearray(512)
    while left > 0:
        try:
            n = await asyncio.wait_for(read(memoryview(buf)[:min(left, 512)]), 10)
        except (asyncio.TimeoutError, OSError):
            return
        if not n:
            return
        left -= n


def mount(app, cfg, log, status, restart):
    """cfg: the update section; status(): the update part of /status; restart(why)."""
    aio.large_bodies(app, ('/update',), BUNDLE_MAX)
    running = []

    @app.route('/update')
    async def update_status(req):
        return Response(status())

    @app.route('/update', methods=['POST'])
    async def update(req):
        if not cfg.key:
            return web.error(403, 'update over the air is off: set update.key (16+ characters) '
                                  'in config.json')
        if running:
            return web.error(409, 'an update is being installed already')
        length = req.content_length
        if not length:
            return web.error(400, 'send the bundle (made by make bundle) as the request body')
        from firmware.ota.install import Installer, Refused
        inst = Installer(cfg.key, log, cfg.confirm_s)
        running.append(inst)
        read = _body_reader(req)
        try:
            m = await inst.run(read, length)
        except Refused as e:
            log.warn('update refused:', e.args[0])
            await _drain(read, inst.left)
            return web.error(400, 'update refused: %s; nothing installed changed' % e.args[0])
        except OSError as e:
            log.error('update failed:', repr(e))
            await _drain(read, inst.left)
            return web.error(500, 'update failed (%r); nothing installed changed' % (e,))
        finally:
            running.pop()
        restart('update to ' + m['version'])
        return Response({'ok': True, 'version': m['version'],
                         'result': 'installed %s: restarting into it' % m['version']})
