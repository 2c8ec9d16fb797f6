"""The lfcp section of config.json: secrets long enough, ports that exist, rules by name."""
import os
import subprocess

from testkit.paths import ROOT

MP = os.path.join(ROOT, '.venv', 'bin', 'micropython')


def parse(text):
    code = ('from firmware.config import schema as config\ntry:\n config.parse(%r)\n'
            ' print("accepted")\nexcept config.ConfigError as e:\n print(e)' % text)
    out = subprocess.run([MP, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=30,
                         env=dict(os.environ, MICROPYPATH='.frozen:' + ROOT))
    return out.stdout + out.stderr


def test_lfcp_config_refuses_short_keys_impossible_ports_and_unknown_rules():
    cases = {
        '{"lfcp": {"key": "k"}}': 'lfcp.key: must be empty (off) or at least 8 characters',
        '{"lfcp": {"servers": ["a.example:99999"]}}': 'lfcp.servers: entries must be "host:port" strings with a port 1..65535',
        '{"lfcp": {"servers": ["a.example:0"]}}': 'port 1..65535',
        '{"lfcp": {"reply_from": "anywhere"}}': 'lfcp.reply_from',
        '{"lfcp": {"discovery": "nowhere"}}': 'lfcp.discovery',
        '{"alarm": {"rearm_after_s": -1}}': 'alarm.rearm_after_s',
    }
    for text, expect in cases.items():
        assert expect in parse(text), (text, parse(text))
    assert parse('{"lfcp": {"key": "12345678", "servers": ["a.example:65535"], '
                 '"reply_from": "exact", "discovery": "255.255.255.255:8443"}}').strip() == 'accepted'
