"""config.example.json documents every key of the schema and is itself a valid config."""
import json
import os
import subprocess

from testkit.paths import ROOT

MP = os.path.join(ROOT, '.venv', 'bin', 'micropython')


def schema_keys():
    """The SCHEMA keys, read from the VM module itself."""
    code = ('from firmware.config import schema as config\nimport json\n'
            'print(json.dumps(dict((s, list(config.SCHEMA[s])) for s in config.SCHEMA)))')
    out = subprocess.run([MP, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=30,
                         env=dict(os.environ, MICROPYPATH='.frozen:' + ROOT))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_example_documents_every_key_and_is_valid():
    with open(os.path.join(ROOT, 'config.example.json')) as f:
        example = json.load(f)
    for section, keys in schema_keys().items():
        assert section in example, section
        for key in keys:
            assert key in example[section], '%s.%s missing from config.example.json' % (section, key)
    code = 'from firmware.config import schema as config\nconfig.load("config.example.json")\nprint("ok")'
    out = subprocess.run([MP, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=30,
                         env=dict(os.environ, MICROPYPATH='.frozen:' + ROOT))
    assert out.stdout.strip() == 'ok', out.stdout + out.stderr


def test_errors_name_the_key():
    cases = {
        '{"camera": {"quality": 5}}': 'camera.quality: must be 10..63, got 5',
        '{"camera": {"qualty": 5}}': 'unknown key camera.qualty',
        '{"cam": {}}': "unknown section 'cam'",
        '{"admin": {"password": "short"}}': 'admin.password',
        '{"lfcp": {"servers": ["a:1", "b:2", "c:3"]}}': 'at most 2',
        '{"wifi": {"upstream": [{"ssid": "x", "pass": "y"}]}}': 'wifi.upstream',
        '{"http": {"control_port": 81}}': 'must differ',
        '{"telegram": {"chat_ids": ["12"]}}': 'telegram.chat_ids',
        '[': 'not valid JSON',
        '{"http": 5}': 'http: must be an object',
        '{"lfcp": []}': 'lfcp: must be an object',
        # issue 17 item 7: refused with the key's name instead of a traceback at boot
        '{"http": {"bind": "garbage!"}}': 'http.bind: must be an IPv4 address',
        '{"http": {"bind": "300.1.1.1"}}': 'http.bind: must be an IPv4 address',
        '{"alarm": {"mask": [%s]}}' % ','.join(['1'] * 5000): 'alarm.mask: at most 2048 cells',
        '{"alarm": {"mask": [-1]}}': 'alarm.mask: entries must be cell numbers',
        '{"wifi": {"upstream": [{"ssid": "x", "password": "short"}]}}': 'wifi.upstream: password',
        '{"wifi": {"ap_password": "1234567"}}': 'wifi.ap_password',
        '{"internet": {"probe": ["1.1.1.1:99999"]}}': 'internet.probe: entries must be "host:port"',
        '{"upnp": {"ssdp": "239.255.255.250:0"}}': 'upnp.ssdp',
        '{"device": {"name": "x"}, "admin": {"user": "%s"}}' % ('u' * 300): 'admin.user: at most 256',
        '{"admin": {"user": "a:b"}}': 'admin.user: must be 1..32 characters without ":"',
        '{"http": {"cors_origins": ["*"]}}': 'http.cors_origins: entries must be origins',
        '{"control": {"open": ["framesize", "warp"]}}': "control.open: unknown /control variable 'warp'",
        '{"telegram": {"chat_ids": [%s]}}' % ','.join(['1'] * 100): 'telegram.chat_ids: at most',
    }
    for text, expect in cases.items():
        code = 'from firmware.config import schema as config\ntry:\n config.parse(%r)\n print("accepted")\nexcept config.ConfigError as e:\n print(e)' % text
        out = subprocess.run([MP, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=30,
                             env=dict(os.environ, MICROPYPATH='.frozen:' + ROOT))
        assert expect in out.stdout, (text, out.stdout, out.stderr)


def test_a_huge_config_file_is_refused_before_it_is_read(tmp_path):
    """alarm.mask with 200,000 entries: refused by size, with the file's name, not a traceback."""
    path = tmp_path / 'config.json'
    path.write_text(json.dumps({'alarm': {'mask': [1] * 200000}}))
    code = ('from firmware.config import schema as config\ntry:\n config.load(%r)\n print("accepted")\n'
            'except config.ConfigError as e:\n print(e)' % str(path))
    out = subprocess.run([MP, '-X', 'heapsize=256K', '-c', code], cwd=ROOT, capture_output=True,
                         text=True, timeout=30, env=dict(os.environ, MICROPYPATH='.frozen:' + ROOT))
    assert 'bytes, at most 32768' in out.stdout, (out.stdout, out.stderr)
