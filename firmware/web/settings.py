"""Admin routes of the settings: every section of config.json, viewed and changed from the page.

    GET  /settings              every key: value (secrets only "set" or not), default, rule
    POST /settings              {"section": {"key": value}, "confirm": true?} -> applied or refused
    GET  /settings/export       config.json without secrets (?secrets=1: with them)
    POST /settings/import       a whole config.json (secrets it lacks keep their values)

This module is loaded for the request and dropped after it (web/admin.py `lazy`), and so is
config.json's own schema (firmware/config/schema.py, ~20 KB) whose checks it applies. A change is written atomically (store.save)
and applied at once where the services read the value when they use it, else reported as
"restart needed". Secrets are write-only: no answer ever carries them, unless an export asks.
A change that could lock the owner out (no admin password, no upstream while connected through
one) is only made with "confirm": true.
"""
import json
import sys

from microdot import Response

from firmware.core import store
from firmware.web import common as web

SECRETS = ('wifi.ap_password', 'admin.password', 'lfcp.key', 'telegram.token', 'update.key')
# Read by their services each time they are used: a new value takes effect at once.
LIVE = ('alarm.auto_arm_after_s', 'alarm.event_gap_s', 'alarm.detect_fps', 'alarm.events_kept',
        'alarm.on_management_return', 'internet.timeout_s', 'internet.interval_s')


class _Schema:
    """`with _Schema() as schema:` the schema module, dropped from the heap afterwards."""

    def __enter__(self):
        from firmware.config import schema
        return schema

    def __exit__(self, *exc):
        import firmware.config
        sys.modules.pop('firmware.config.schema', None)
        if hasattr(firmware.config, 'schema'):
            del firmware.config.schema


def _rule(spec):
    typ, _, check = spec
    if isinstance(check, tuple):
        if typ is int:
            return '%d..%d' % check
        return 'one of ' + ', '.join(check)
    if check is not None:
        return {'_min8': 'empty (off) or 8+ characters', '_min16': 'empty (off) or 16+ characters',
                '_hostports': 'list of "host:port"', '_aps': 'list of {ssid, password}',
                '_name': '1..31 letters, digits, - or _', '_ints': 'list of integers'}.get(
                    getattr(check, '__name__', ''), 'checked')
    return ''


def _public(data, schema):
    """The settings as the page shows them: secrets as set/unset only."""
    out = {}
    for name in schema.SCHEMA:
        sec = schema.section(data, name)
        keys = {}
        for key, spec in schema.SCHEMA[name].items():
            path = name + '.' + key
            v = sec[key]
            item = {'type': spec[0].__name__, 'default': spec[1], 'rule': _rule(spec),
                    'live': path in LIVE}
            if path in SECRETS:
                item['secret'] = True
                item['set'] = bool(v)
                item['default'] = ''
            elif path == 'wifi.upstream':
                v = [{'ssid': ap.get('ssid'), 'password_set': bool(ap.get('password'))} for ap in v]
            if path not in SECRETS:
                item['value'] = v
            keys[key] = item
        out[name] = keys
    return out


def strip_secrets(data):
    out = {}
    for name in data:
        sec = data[name]
        if not isinstance(sec, dict):
            out[name] = sec
            continue
        out[name] = dict((k, sec[k]) for k in sec if name + '.' + k not in SECRETS)
        if isinstance(sec.get('upstream'), list):
            out[name]['upstream'] = [{'ssid': ap.get('ssid')} for ap in sec['upstream']
                                     if isinstance(ap, dict)]
    return out


def _keep_secrets(new, old):
    """Secrets the change does not give keep their values (an upstream's password by SSID)."""
    for path in SECRETS:
        name, key = path.split('.')
        if key in old.get(name, {}) and key not in new.get(name, {}):
            new.setdefault(name, {})[key] = old[name][key]
    ups = new.get('wifi', {}).get('upstream')
    if isinstance(ups, list):
        known = dict((ap.get('ssid'), ap.get('password')) for ap in old.get('wifi', {}).get('upstream', [])
                     if isinstance(ap, dict))
        for ap in ups:
            if isinstance(ap, dict):
                ap.pop('password_set', None)      # as GET /settings shows them
                if 'password' not in ap and known.get(ap.get('ssid')):
                    ap['password'] = known[ap.get('ssid')]
    return new


def _load(path):
    return store.load(path, {}) or {}


def _refuse(errors):
    return web.error(400, 'settings refused, nothing changed:\n' + '\n'.join(errors))


def _lockout(new, old, connected):
    if old.get('admin', {}).get('password') and not new.get('admin', {}).get('password'):
        return 'an empty admin.password turns this admin page off'
    if connected() and old.get('wifi', {}).get('upstream') and not new.get('wifi', {}).get('upstream'):
        return 'removing every upstream cuts the connection this page came through'
    return None


def _save(ctx, new, old, confirm):
    path, cfg, log, connected, pending = ctx
    why = _lockout(new, old, connected)
    if why and not confirm:
        return Response({'ok': False, 'confirm': why + ': send again with confirm'}, 409)
    with _Schema() as schema:
        errors = schema.validate(new)
    if errors:
        return _refuse(errors)
    store.save(path, new)
    live = []
    for name in new:
        if name[:1] == '_' or not isinstance(new[name], dict):
            continue
        was = old.get(name) if isinstance(old.get(name), dict) else {}
        for key in new[name]:
            if key[:1] == '_' or (key in was and was[key] == new[name][key]):
                continue
            p = name + '.' + key
            if p in SECRETS:
                log.secret(new[name][key])
            if p in LIVE:
                setattr(getattr(cfg, name), key, new[name][key])
                live.append(p)
            else:
                pending[p] = 1
    log('settings: changed' + (', applied ' + ' '.join(live) if live else '') +
        (', restart needed for ' + ' '.join(sorted(pending)) if pending else ''))
    return Response({'ok': True, 'applied': live, 'restart_needed': sorted(pending)})


async def handle(req, path, ctx):
    """ctx: (config.json path, live config, log, connected(), {keys that need a restart})."""
    post = req.method == 'POST'
    if path == 'settings':
        return change(req, ctx) if post else show(req, ctx)
    if path == 'settings/export' and not post:
        return export(req, ctx)
    if path == 'settings/import' and post:
        return import_(req, ctx)
    return web.error(404, 'not found: /' + path)


def show(req, ctx):
    with _Schema() as schema:
        out = _public(_load(ctx[0]), schema)
    return Response({'settings': out, 'restart_needed': sorted(ctx[4])})


def change(req, ctx):
    body = req.json if (req.content_type or '').startswith('application/json') else None
    if not isinstance(body, dict):
        return web.error(400, 'send a JSON object: {"section": {"key": value}}')
    confirm = body.pop('confirm', False) is True
    old = _load(ctx[0])
    new = json.loads(json.dumps(old))       # a deep copy of plain JSON
    for name in body:
        if not isinstance(body[name], dict):
            return _refuse(['config: %s: must be an object' % name])
        new.setdefault(name, {}).update(body[name])
    return _save(ctx, _keep_secrets(new, old), old, confirm)


def export(req, ctx):
    data = _load(ctx[0])
    if req.args.get('secrets') != '1':
        data = strip_secrets(data)
    return Response(data, 200, {'Content-Disposition': 'attachment; filename=config.json'})


def import_(req, ctx):
    body = req.json if (req.content_type or '').startswith('application/json') else None
    if not isinstance(body, dict):
        return web.error(400, 'send the whole config.json as a JSON object')
    old = _load(ctx[0])
    return _save(ctx, _keep_secrets(body, old), old, req.args.get('confirm') == '1')
