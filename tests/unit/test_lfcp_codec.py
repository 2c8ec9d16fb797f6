"""The LFCP codec (firmware/lfcp/codec.py): framing, limits, and the HMAC on both interpreters."""
import hashlib
import hmac
import json
import os
import subprocess

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from testkit.vm.lfcp_harness import MP, REPO

from firmware.lfcp import codec as lfcp

KEYS = [b'', b'k', b'0123456789abcdef', b'x' * 64, b'y' * 65, bytes(range(200))]
MSGS = [b'', b'cam1,HEARTBEAT,0,0,0,0,0,0,1', b'a' * 300]


@pytest.fixture
def pure(monkeypatch):
    monkeypatch.setattr(lfcp, '_hmac', None)  # the MicroPython code path, on CPython


def test_own_hmac_matches_the_standard_library(pure):
    for k in KEYS:
        for m in MSGS:
            for way in (lfcp.UP, lfcp.DOWN):  # the direction tag leads the MAC'd bytes
                want = hmac.new(k, way + m, hashlib.sha256).hexdigest().encode()
                assert lfcp.Hmac(k).hexdigest(m, way) == want


@pytest.mark.skipif(not os.path.exists(MP), reason='no MicroPython VM: run make setup')
def test_micropython_computes_the_same_macs():
    script = ('import json\nfrom firmware.lfcp import codec as lfcp\n'
              'print(json.dumps([lfcp.Hmac(bytes(k)).hexdigest(bytes(m)).decode() '
              'for k in %r for m in %r]))' % ([list(k) for k in KEYS], [list(m) for m in MSGS]))
    out = subprocess.run([MP, '-c', script], env=dict(os.environ, MICROPYPATH='.frozen:' + REPO),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    want = [hmac.new(k, lfcp.UP + m, hashlib.sha256).hexdigest() for k in KEYS for m in MSGS]
    assert json.loads(out.stdout) == want


def test_plain_round_trip_pads_unused_fields_with_zero():
    data = lfcp.encode('cam1', 'LOG', ('alarm_enabled_request_via_http',))
    assert data == b'cam1,LOG,alarm_enabled_request_via_http,0,0,0,0,0'
    assert lfcp.decode(data) == (data.decode().split(','), None)


def test_authenticated_round_trip_and_tamper_detection():
    k = lfcp.Hmac('secret-key-123')
    data = lfcp.encode('cam1', 'TLGC', ('123:abc', '42'), 7, k)
    f, seq = lfcp.decode(data, k)
    assert f == ['cam1', 'TLGC', '123:abc', '42', '0', '0', '0', '0'] and seq == 7
    assert len(data.split(b',')) == 10 and len(data.split(b',')[9]) == 64
    for i in range(len(data) - 65):  # any changed byte before the MAC is caught
        bad = data[:i] + (b'Z' if data[i:i + 1] != b'Z' else b'Y') + data[i + 1:]
        with pytest.raises(lfcp.LfcpError):
            lfcp.decode(bad, k)
    with pytest.raises(lfcp.LfcpError) as e:
        lfcp.decode(data, lfcp.Hmac('another-key'))
    assert e.value.kind == 'bad_mac'


def test_limits():
    with pytest.raises(ValueError):
        lfcp.encode('cam1', 'LOG', ('x' * 64, 'y' * 64))  # over 128 bytes
    assert lfcp.clean('a, b\nc' + 'z' * 100) == ('a;_bc' + 'z' * 100)[:64]
    assert lfcp.clean('') == '0'
    k = lfcp.Hmac('k')
    longest = lfcp.encode('n' * 31, 'HEARTBEAT', ('x' * 64, 'y' * 7), 10 ** 18, k)
    assert len(longest) <= lfcp.MAX_AUTH
    assert lfcp.decode(longest, k)[1] == 10 ** 18
    cases = {
        b'a,b,c,d,e,f,g,' + b'h' * 121: 'oversized',  # 129 bytes plain
        b'x' * 225: 'oversized',
        b'a,b,c,d,e,f,g': 'fields',
        b'a,b,c,d,e,f,g,h,i': 'fields',
        b'a,b,c,d,e,f,g,\xff': 'malformed',
        b'a,b,c,d,e,f,g,' + b'h' * 65: 'malformed',
    }
    for data, kind in cases.items():
        with pytest.raises(lfcp.LfcpError) as e:
            lfcp.decode(data, k)
        assert e.value.kind == kind, data
    assert lfcp.decode(b'a,b,c,d,e,f,g,h\r\n')[0][7] == 'h'  # a trailing newline is tolerated


def test_bad_seq_is_malformed_but_authenticated():
    k = lfcp.Hmac('k')
    body = b'cam1,ENAL,0,0,0,0,0,0,12x'
    with pytest.raises(lfcp.LfcpError) as e:
        lfcp.decode(body + b',' + k.hexdigest(body), k)
    assert (e.value.kind, e.value.auth) == ('malformed', True)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_decode_refuses_garbage_only_with_lfcp_errors(data):
    k = lfcp.Hmac('k')
    try:
        f, seq = lfcp.decode(data, k)
    except lfcp.LfcpError as e:
        assert e.kind in ('oversized', 'malformed', 'fields', 'bad_mac')
        return
    assert len(f) == 8 and seq is None  # garbage never authenticates


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126),
                        max_size=20), max_size=6), st.integers(0, 10 ** 18))
@example(['x' * 20] * 6, 1)     # 134 bytes: what the old test could not take
def test_encode_decode_round_trip(params, seq):
    k = lfcp.Hmac('k')
    fields = ['cam1', 'LOG'] + [lfcp.clean(p) for p in params] + ['0'] * (6 - len(params))
    if len(','.join(fields)) > lfcp.MAX_PLAIN:   # six long parameters: refused, never cut
        with pytest.raises(ValueError, match='longer than 128 bytes'):
            lfcp.encode('cam1', 'LOG', params, seq, k)
        return
    f, s = lfcp.decode(lfcp.encode('cam1', 'LOG', params, seq, k), k)
    assert s == seq and f[2:2 + len(params)] == [lfcp.clean(p) for p in params]


def test_protocol_document_examples_verify():
    """Every authenticated example in docs/protocol.md carries a correct MAC under its key."""
    text = open(os.path.join(REPO, 'docs', 'protocol.md')).read()
    k = lfcp.Hmac('correct horse battery staple')
    lines = [ln.strip() for ln in text.splitlines()]
    examples = [ln for ln in lines if ln[:3] in ('D> ', 'S> ', 'L> ') and ln.count(',') == 9]
    assert len(examples) >= 6
    for ex in examples:
        lfcp.decode(ex[3:].encode(), k, lfcp.UP if ex[0] == 'D' else lfcp.DOWN)
