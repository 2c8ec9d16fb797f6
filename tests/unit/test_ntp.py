"""firmware/net/ntp.py on the VM: the SNTP request, the validation of replies (a LAN attacker can
answer in the server's place), the server list with the router's gateway, and firmware/core/clock
in words, on the unix port's 1970 epoch."""
import json
import os
import subprocess
import time

from peers import fake_ntp
from testkit.paths import MICROPYTHON, ROOT

STAMP = bytes(range(1, 9))

SCRIPT = '''
import json, sys
from firmware.net import ntp, sntp
from firmware.core import clock
cases = json.loads(sys.stdin.read())
out = {'request': sntp.request(bytes(range(1, 9))).hex()}
for name, hexed in cases.items():
    try:
        out[name] = list(sntp.parse(bytes.fromhex(hexed), bytes(range(1, 9))))
    except ValueError as e:
        out[name] = 'refused: ' + e.args[0]
out['servers'] = sntp.server_list(['pool.ntp.org', 'gateway', '10.0.0.9:1123', 'gateway:5'],
                                 lambda: '192.168.1.1')
out['no_gateway'] = sntp.server_list(['gateway', 'a'], lambda: '0.0.0.0')
out['text_2000'] = clock.text(946684800 + 5)
out['text_2026'] = clock.text(1796182206)
out['unix_2000'] = clock.unix(946684800 + 5)
print(json.dumps(out))
'''


def run(cases):
    r = subprocess.run([MICROPYTHON, '-c', SCRIPT], input=json.dumps(cases), capture_output=True,
                       text=True, timeout=30, cwd=ROOT,
                       env=dict(os.environ, MICROPYPATH='.frozen:' + ROOT))
    assert r.returncode == 0, r.stderr + r.stdout
    return json.loads(r.stdout)


def test_request_is_a_version_4_client_packet_carrying_our_stamp():
    req = bytes.fromhex(run({})['request'])
    assert len(req) == 48 and req[0] == 0x23 and req[40:48] == STAMP


def test_valid_reply_gives_the_time_and_forged_ones_are_refused_by_name():
    req = bytes(40) + STAMP
    now = 1796182206.25
    cases = {'good': fake_ntp.reply(req, now).hex()}
    for kind in fake_ntp.BAD:
        cases[kind] = fake_ntp.forged(kind, req).hex()
    out = run(cases)
    assert out['good'] == [1796182206, 250000]
    assert out['origin'] == 'refused: not an answer to our request'
    assert out['stratum0'] == 'refused: stratum 0'
    assert out['mode3'] == 'refused: not a server reply (mode 3)'
    assert out['zero_time'] == 'refused: no transmit time'
    assert out['leap3'] == 'refused: server not synchronised'
    assert out['short'] == 'refused: short reply (40 bytes)'


def test_era_1_after_2036():
    req = bytes(40) + STAMP
    t = 2145916800 + 3600 * 24 * 365 * 2   # 2040: past the wrap of the 32-bit NTP seconds (2036)
    assert run({'late': fake_ntp.reply(req, t).hex()})['late'] == [t, 0]


def test_server_list_and_the_gateway():
    out = run({})
    assert out['servers'] == [['pool.ntp.org', 123, 'pool.ntp.org'], ['192.168.1.1', 123, 'gateway'],
                              ['10.0.0.9', 1123, '10.0.0.9:1123'], ['192.168.1.1', 5, 'gateway:5']]
    assert out['no_gateway'] == [['a', 123, 'a']]     # no DHCP lease yet: the gateway is left out


def test_clock_in_words():
    out = run({})
    assert out['text_2000'] == 'time not set' and out['unix_2000'] is None
    assert out['text_2026'] == time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(1796182206))


def test_time_config_errors_name_the_key():
    cases = {
        '{"time": {"servers": ["pool.ntp.org:0"]}}': 'time.servers: entries must be "host" or "host:port"',
        '{"time": {"servers": ["a:b:c"]}}': 'time.servers: entries must be',
        '{"time": {"servers": [""]}}': 'time.servers: entries must be',
        '{"time": {"servers": [123]}}': 'time.servers',
        '{"time": {"resync_h": 0}}': 'time.resync_h: must be 1..168, got 0',
        '{"time": {"servers": ["10.0.0.1:123", "gateway", "gateway:1123"], "resync_h": 6}}': 'accepted',
        '{"time": {"servers": []}}': 'accepted',
    }
    for text, expect in cases.items():
        code = ('from firmware.config import schema\ntry:\n schema.parse(%r)\n print("accepted")\n'
                'except schema.ConfigError as e:\n print(e)' % text)
        out = subprocess.run([MICROPYTHON, '-c', code], cwd=ROOT, capture_output=True, text=True,
                             timeout=30, env=dict(os.environ, MICROPYPATH='.frozen:' + ROOT))
        assert expect in out.stdout, (text, out.stdout, out.stderr)
