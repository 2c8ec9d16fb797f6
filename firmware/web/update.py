"""Admin routes of the update over the air: POST /update installs a bundle, GET /update says
where updates stand. Behind the admin server's authentication; loaded for the request and
dropped after it (web/admin.py `lazy`), with the installer.

The bundle is read from the socket in 1 KB slices straight to the flash (firmware/ota/install.py),
never whole in memory. A refused bundle is read to its end before the answer, so the client sees
the reason instead of a reset connection.
"""
import sys

from microdot import Response

from firmware.web import common as web


def _drop():
    """The installer leaves the heap with its request (a refused bundle keeps nothing)."""
    import firmware.ota
    for name in ('install', 'trial'):
        if sys.modules.pop('firmware.ota.' + name, None) and hasattr(firmware.ota, name):
            delattr(firmware.ota, name)


async def handle(req, path, ctx):
    """ctx: (update config section, log, status() of updates, restart(why), running list)."""
    cfg, log, status, restart, running = ctx
    if path != 'update':
        return web.error(404, 'not found: /' + path)
    if req.method != 'POST':
        return Response(status())
    if not cfg.key:
        return web.error(403, 'update over the air is off: set update.key (16+ characters) '
                              'in config.json')
    if running:
        return web.error(409, 'an update is being installed already')
    length = req.content_length
    if not length:
        return web.error(400, 'send the bundle (made by make bundle) as the request body')
    from firmware.ota.install import Installer, Refused, body_reader, drain
    inst = Installer(cfg.key, log, cfg.confirm_s)
    running.append(inst)
    read = body_reader(req)
    try:
        m = await inst.run(read, length)
    except Refused as e:
        log.warn('update refused:', e.args[0])
        await drain(read, inst.left)
        return web.error(400, 'update refused: %s; nothing installed changed' % e.args[0])
    except OSError as e:
        log.error('update failed:', repr(e))
        await drain(read, inst.left)
        return web.error(500, 'update failed (%r); nothing installed changed' % (e,))
    finally:
        running.pop()
        _drop()
    restart('update to ' + m['version'])
    return Response({'ok': True, 'version': m['version'],
                     'result': 'installed %s: restarting into it' % m['version']})
