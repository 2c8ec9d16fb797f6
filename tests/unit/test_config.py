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
    }
    for text, expect in cases.items():
        code = 'from firmware.config import schema as config\ntry:\n config.parse(%r)\n print("accepted")\nexcept config.ConfigError as e:\n print(e)' % text
        out = subprocess.run([MP, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=30,
                             env=dict(os.environ, MICROPYPATH='.frozen:' + ROOT))
        assert expect in out.stdout, (text, out.stdout, out.stderr)
