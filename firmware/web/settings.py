"""Admin routes of the settings: every section of config.json, viewed and changed from the page.

    GET  /settings              every key: value (secrets only "set" or not), default, rule
    POST /settings              {"section": {"key": value}, "confirm": true?} -> applied or refused
    GET  /settings/export       config.json without secrets (?secrets=1: with them)
    POST /settings/import       a whole config.json (secrets it lacks keep their values)

The work is done by firmware/web/settings_editor.py and config.json's own schema, both loaded for the
request and dropped from the heap after it (together ~25 KB the rest of the time).
"""
import sys


def _call(name, req, ctx):
    import firmware.web
    from firmware.web import settings_editor
    try:
        return getattr(settings_editor, name)(req, ctx)
    finally:
        sys.modules.pop('firmware.web.settings_editor', None)
        if hasattr(firmware.web, 'settings_editor'):
            del firmware.web.settings_editor


def mount(app, path, cfg, log, connected):
    """path: config.json; cfg: the live config (Sections); connected(): True while the board
    has an uplink (the page may be reached through it)."""
    ctx = (path, cfg, log, connected, {})     # the last: keys changed that need a restart

    @app.route('/settings')
    async def show(req):
        return _call('show', req, ctx)

    @app.route('/settings', methods=['POST'])
    async def change(req):
        return _call('change', req, ctx)

    @app.route('/settings/export')
    async def export(req):
        return _call('export', req, ctx)

    @app.route('/settings/import', methods=['POST'])
    async def import_(req):
        return _call('import_', req, ctx)
