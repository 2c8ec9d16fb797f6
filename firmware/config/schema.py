"""config.json: the schema, its defaults, and validation that names the offending key.

Every key is documented in config.example.json (keys starting with "_" are comments). A value that is wrong is refused at boot with a
message such as `config: camera.quality: must be 10..63, got 5`; an unknown key is refused too, so
a typo never silently falls back to a default. Credentials default to empty: the feature that
needs them stays off until they are set.
"""
import json

from firmware.camera.framesize import FRAMESIZES
from firmware.config.section import Section

# key: (type, default, check). check is (lo, hi) for ints, a tuple of choices for strs,
# a callable returning an error text or None, or None.


# The /control variables of CameraWebServer (control.open names some of them).
CONTROL_VARS = ('framesize', 'quality', 'brightness', 'contrast', 'saturation', 'sharpness',
        'special_effect', 'wb_mode', 'vflip', 'hmirror', 'awb', 'awb_gain', 'aec', 'aec2',
        'ae_level', 'aec_value', 'agc', 'agc_gain', 'gainceiling', 'bpc', 'wpc', 'raw_gma',
        'lenc', 'dcw', 'colorbar', 'led_intensity')
MAX_STR = 256       # no text in the config is longer (a 200 KB string would fill the heap)
MAX_LIST = 16       # entries of a list, unless its check says otherwise
MAX_MASK = 2048     # alarm.mask cells (a 200k-entry list would not fit in the heap)
MAX_CELLS = 200 * 150   # thumbnail cells of the largest frame (UXGA at 1/8 scale)
MIN_SECRET = 8


# GPIOs the AI-Thinker's camera uses (and 34..39 are inputs only): no LED there
CAMERA_PINS = (0, 5, 18, 19, 21, 22, 23, 25, 26, 27, 32)
OUTPUT_PINS = (0, 1, 2, 3, 4, 5, 12, 13, 14, 15, 16, 17, 18, 19, 21, 22, 23, 25, 26, 27, 32, 33)


NULLABLE = ('camera.flash_pin',)    # keys that may be null: the feature is absent


def _flash_pin(v):
    if v == -1:
        return None             # no flash LED on this board, as null
    if v not in OUTPUT_PINS or v in CAMERA_PINS:
        return ('must be null (no LED) or a free output GPIO (4 on the AI-Thinker), got %r'
                % (v,))
    return None


def _min8(v):
    if v == '' or len(v) >= MIN_SECRET:
        return None
    return 'must be empty (off) or at least %d characters' % MIN_SECRET


def _wpa(v):
    """A WPA2 passphrase: 8..63 characters, or empty for an open network."""
    if v == '' or MIN_SECRET <= len(v) <= 63:
        return None
    return 'must be empty (open network) or 8..63 characters'


def _ssid(v):
    return None if 1 <= len(v) <= 32 else 'must be 1..32 characters'


def _port(p):
    return p.isdigit() and 1 <= int(p) <= 65535


def _min16(v):
    return None if v == '' or len(v) >= 16 else 'must be empty (off) or at least 16 characters'


def _hostports(v):
    if len(v) > MAX_LIST:
        return 'at most %d entries' % MAX_LIST
    for s in v:
        if not isinstance(s, str) or s.count(':') != 1 or not s.split(':')[0] \
                or not _port(s.split(':')[1]) or len(s) > 128:
            return 'entries must be "host:port" strings with a port 1..65535, got %r' % (s,)
    return None


def _ntp_servers(v):
    """NTP servers: "host" (port 123) or "host:port"; "gateway" is the router (from DHCP)."""
    if len(v) > MAX_LIST:
        return 'at most %d entries' % MAX_LIST
    for s in v:
        if not isinstance(s, str) or not s or len(s) > 128 or s.count(':') > 1 or s[0] == ':' \
                or (':' in s and not _port(s.split(':')[1])) or ' ' in s:
            return 'entries must be "host" or "host:port" strings with a port 1..65535, got %r' % (s,)
    return None


def _hostport_or_off(v):
    return None if v == '' else _hostports([v])


def _ipv4(v):
    parts = v.split('.')
    if len(parts) == 4:
        for p in parts:
            if not (p.isdigit() and len(p) <= 3 and int(p) <= 255):
                break
        else:
            return None
    return 'must be an IPv4 address such as 0.0.0.0 (every interface), got %r' % (v[:40],)


def _aps(v):
    if len(v) > MAX_LIST:
        return 'at most %d access points' % MAX_LIST
    for ap in v:
        if not isinstance(ap, dict) or not isinstance(ap.get('ssid'), str) or not ap['ssid']:
            return 'entries must be {"ssid": ..., "password": ...}'
        for k in ap:
            if k not in ('ssid', 'password'):
                return 'unknown key %r in an access point' % k
        if _ssid(ap['ssid']):
            return 'ssid %r: must be 1..32 characters' % ap['ssid'][:40]
        pw = ap.get('password', '')
        if not isinstance(pw, str) or _wpa(pw):
            return 'password of %r: must be empty (open network) or 8..63 characters' % ap['ssid']
    return None


def _user(v):
    if not 1 <= len(v) <= 32 or ':' in v:
        return 'must be 1..32 characters without ":"'
    return None


def _mask(v):
    if len(v) > MAX_MASK:
        return 'at most %d cells, got %d' % (MAX_MASK, len(v))
    for x in v:
        if not isinstance(x, int) or isinstance(x, bool) or not 0 <= x < MAX_CELLS:
            return 'entries must be cell numbers 0..%d, got %r' % (MAX_CELLS - 1, x)
    return None


def _origins(v):
    if len(v) > MAX_LIST:
        return 'at most %d origins' % MAX_LIST
    for o in v:
        if not isinstance(o, str) or not (o.startswith('http://') or o.startswith('https://')) \
                or o.count('/') != 2 or len(o) > 128:
            return 'entries must be origins such as "http://nvr.lan:8000", got %r' % (o,)
    return None


def _control_vars(v):
    if len(v) > len(CONTROL_VARS):
        return 'too many entries'
    for x in v:
        if x not in CONTROL_VARS:
            return 'unknown /control variable %r' % (x,)
    return None


def _name(v):
    if not v or len(v) > 31 or not _ident(v):
        return 'must be 1..31 letters, digits, "-" or "_"'
    return None


def _ident(v):
    for c in v:
        if not (c.isalpha() or c.isdigit() or c in '-_'):
            return False
    return True


def _topic(v):
    if '+' in v or '#' in v or v.endswith('/'):
        return 'must not contain "+", "#" or end with "/"'
    return None


def _level(v):
    if not v or '/' in v or '+' in v or '#' in v:
        return 'must be one topic level (no "/", "+", "#")'
    return None


def _ints(v):
    if len(v) > MAX_LIST:
        return 'at most %d entries' % MAX_LIST
    for x in v:
        if not isinstance(x, int) or isinstance(x, bool):
            return 'entries must be integers, got %r' % (x,)
    return None


SCHEMA = {
    'device': {
        'name': (str, 'esp32cam', _name),
    },
    'wifi': {
        'ap_ssid': (str, 'esp32cam-alarm', _ssid),
        'ap_password': (str, '', _wpa),
        'ap_channel': (int, 6, (1, 13)),
        'upstream': (list, [], _aps),
        'connect_timeout_s': (int, 15, (1, 300)),
        'rounds_before_fallback': (int, 3, (1, 1000)),
        'fallback': (str, 'ap_only', ('ap_only', 'deepsleep')),
        'fallback_sleep_s': (int, 600, (1, 86400)),
    },
    'camera': {
        'format': (str, 'JPEG', ('JPEG', 'GRAYSCALE')),
        'framesize': (str, 'VGA', FRAMESIZES),
        'quality': (int, 12, (10, 63)),
        'max_fps': (int, 25, (1, 1000)),
        'vflip': (int, 0, (0, 1)),
        'hmirror': (int, 0, (0, 1)),
        'brightness': (int, 0, (-2, 2)),
        'contrast': (int, 0, (-2, 2)),
        'saturation': (int, 0, (-2, 2)),
        'special_effect': (int, 0, (0, 6)),
        'wb_mode': (int, 0, (0, 4)),
        'xclk_mhz': (int, 10, (10, 20)),
        'reboot_after_failures': (int, 20, (0, 10000)),
        'flash_pin': (int, 4, _flash_pin),     # or null (NULLABLE)
        'flash': (str, 'off', ('off', 'night', 'always')),
        'flash_intensity': (int, 255, (1, 255)),
        'flash_stream': (str, 'disarmed', ('always', 'disarmed', 'never')),
        'flash_stream_max': (int, 255, (0, 255)),
    },
    'http': {
        'bind': (str, '0.0.0.0', _ipv4),
        'control_port': (int, 80, (1, 65535)),
        'stream_port': (int, 81, (1, 65535)),
        'admin_port': (int, 8080, (1, 65535)),
        'max_viewers': (int, 8, (1, 32)),
        'backlog': (int, 16, (1, 64)),
        'cors_origins': (list, [], _origins),
        'request_timeout_s': (int, 5, (1, 60)),
        'max_connections': (int, 9, (2, 64)),
        'per_client': (int, 8, (1, 64)),
        'admin_reserve': (int, 3, (2, 16)),
    },
    'control': {
        'open': (list, [], _control_vars),
    },
    'admin': {
        'user': (str, 'admin', _user),
        'password': (str, '', _min8),
    },
    'lfcp': {
        'servers': (list, [], _hostports),
        'port': (int, 8443, (1, 65535)),
        'key': (str, '', _min8),
        'legacy': (bool, False, None),
        'reply_from': (str, 'host', ('exact', 'host', 'any')),
        'strict_original': (bool, False, None),
        'repeat_window_s': (int, 10, (0, 3600)),
        'discovery': (str, '', _hostport_or_off),
        'heartbeat_s': (int, 17, (1, 3600)),
        'unreachable_after_s': (int, 60, (2, 86400)),
        'alarm_deadline_s': (int, 300, (1, 86400)),
        'rate_limit': (int, 20, (1, 10000)),
    },
    'alarm': {
        'sensitivity': (int, 5, (1, 10)),
        'detect_fps': (int, 5, (1, 25)),
        'min_frames': (int, 2, (1, 50)),
        'event_gap_s': (int, 30, (0, 86400)),
        'mask': (list, [], _mask),
        'auto_arm': (bool, True, None),
        'auto_arm_after_s': (int, 120, (0, 86400)),
        'on_management_return': (str, 'stay', ('stay', 'restore')),
        'rearm_after_s': (int, 0, (0, 604800)),
        'events_kept': (int, 20, (1, 200)),
        'pir': (str, 'off', ('off', 'and', 'or')),
    },
    'internet': {
        'probe': (list, ['1.1.1.1:443', '8.8.8.8:53'], _hostports),
        'timeout_s': (int, 3, (1, 60)),
        'interval_s': (int, 60, (5, 86400)),
    },
    'time': {
        'servers': (list, ['pool.ntp.org', 'gateway'], _ntp_servers),
        'resync_h': (int, 24, (1, 168)),
    },
    'telegram': {
        'token': (str, '', None),
        'chat_ids': (list, [], _ints),
        'api_url': (str, 'https://api.telegram.org', None),
        'ca_file': (str, '', None),
        'poll_s': (int, 30, (0, 300)),
        'queue': (int, 4, (1, 32)),
        'alarm_slots': (int, 2, (0, 32)),
    },
    'mqtt': {
        'host': (str, '', None),
        'port': (int, 1883, (1, 65535)),
        'user': (str, '', None),
        'password': (str, '', None),
        'tls_ca': (str, '', None),
        'topic': (str, '', _topic),
        'discovery_prefix': (str, 'homeassistant', _level),
        'keepalive_s': (int, 60, (5, 3600)),
        'timeout_s': (int, 10, (1, 120)),
        'allow_destructive': (bool, False, None),
        'motion_hold_s': (int, 10, (1, 3600)),
    },
    'upnp': {
        'external_port': (int, 54321, (1, 65535)),
        'port_range': (int, 10, (1, 1000)),
        'expose': (str, 'stream', ('stream', 'control')),
        'lease_s': (int, 3600, (0, 604800)),
        'echo_url': (str, '', None),
        'check_s': (int, 300, (10, 86400)),
        'ssdp': (str, '239.255.255.250:1900', lambda v: _hostports([v])),
    },
    'storage': {
        'sdcard': (bool, False, None),
        'mount': (str, '/sd', lambda v: None if v[:1] == '/' and len(v) > 1 and '/' not in v[1:]
                  else 'must be one directory under the root, like "/sd"'),
        'format_blank': (bool, False, None),
    },
    'clips': {
        'enabled': (bool, True, None),
        'fps': (int, 10, (1, 25)),
        'pre_s': (int, 3, (0, 30)),
        'pre_bytes': (int, 400000, (0, 16000000)),
        'post_s': (int, 10, (1, 600)),
        'max_s': (int, 60, (5, 3600)),
        'slice': (int, 4096, (512, 65536)),
        'reserve_mb': (int, 16, (0, 1000000)),
        'telegram': (bool, True, None),
        'timelapse_s': (int, 0, (0, 86400)),
    },
    'update': {
        'key': (str, '', _min16),
        'confirm_s': (int, 120, (20, 3600)),
    },
    'watchdog': {
        'timeout_s': (int, 30, (0, 3600)),
    },
    'log': {
        'lines': (int, 50, (5, 1000)),
    },
}


class ConfigError(ValueError):
    pass


def Config(data):
    """The validated values as plain attribute objects: cfg.camera.quality.

    They are built from firmware.config.section, not from classes of this module, so that once the
    firmware has its config it can drop this module, its schema and its checks from the heap.
    """
    return Section(dict((name, Section(section(data, name))) for name in SCHEMA))


def _check_value(path, spec, value):
    typ, _, check = spec
    if value is None and path in NULLABLE:
        return None
    if typ is str and isinstance(value, str) and len(value) > MAX_STR:
        return '%s: at most %d characters, got %d' % (path, MAX_STR, len(value))
    if typ is int and (not isinstance(value, int) or isinstance(value, bool)):
        return '%s: must be an integer, got %r' % (path, value)
    if typ is not int and type(value) is not typ:
        return '%s: must be a %s, got %r' % (path, typ.__name__, value)
    if isinstance(check, tuple):
        if typ is int and not check[0] <= value <= check[1]:
            return '%s: must be %d..%d, got %d' % (path, check[0], check[1], value)
        if typ is str and value not in check:
            return '%s: must be one of %s, got %r' % (path, ', '.join(check), value)
    elif check is not None:
        err = check(value)
        if err:
            return '%s: %s' % (path, err)
    return None


def section(data, name):
    spec = SCHEMA[name]
    given = data.get(name, {})
    out = {}
    for key in spec:
        out[key] = given[key] if key in given else spec[key][1]
    return out


def validate(data):
    """Return a list of error texts; empty when the config is usable."""
    if not isinstance(data, dict):
        return ['config: must be a JSON object']
    errors = []
    for name in data:
        if name[:1] == '_':
            continue            # "_doc" entries: documentation, as in config.example.json
        if name not in SCHEMA:
            errors.append('config: unknown section %r' % name)
            continue
        given = data[name]
        if not isinstance(given, dict):
            errors.append('config: %s: must be an object' % name)
            continue
        for key in given:
            if key[:1] == '_':
                continue
            if key not in SCHEMA[name]:
                errors.append('config: unknown key %s.%s' % (name, key))
                continue
            err = _check_value(name + '.' + key, SCHEMA[name][key], given[key])
            if err:
                errors.append('config: ' + err)
    if errors:
        return errors       # the checks across sections below assume well-typed sections
    lfcp = data.get('lfcp', {})
    if isinstance(lfcp.get('servers'), list) and len(lfcp['servers']) > 2:
        errors.append('config: lfcp.servers: at most 2 management servers')
    http = data.get('http', {})
    ports = [http.get(k, SCHEMA['http'][k][1]) for k in ('control_port', 'stream_port', 'admin_port')]
    if len(set(str(p) for p in ports)) != 3:
        errors.append('config: http: control_port, stream_port and admin_port must differ')
    return errors


def parse(text):
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ConfigError('config: not valid JSON: %s' % e)
    errors = validate(data)
    if errors:
        raise ConfigError('\n'.join(errors))
    return Config(data)


MAX_FILE = 32768    # bytes: read whole into a heap of ~100 KB, so bounded before reading


def load(path='config.json'):
    import os
    try:
        size = os.stat(path)[6]
    except OSError:
        raise ConfigError('config: %s not found; copy config.example.json and edit it' % path)
    if size > MAX_FILE:
        raise ConfigError('config: %s is %d bytes, at most %d' % (path, size, MAX_FILE))
    with open(path) as f:
        text = f.read()
    try:
        return parse(text)
    except MemoryError:
        raise ConfigError('config: %s: too large to parse in this heap' % path)
