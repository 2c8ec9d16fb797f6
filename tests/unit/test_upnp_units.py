"""Parsing in firmware/remote/upnp.py and firmware/remote/port_forward.py, on the MicroPython VM.

Fixed cases use bodies recorded from miniupnpd 2.3.1; generated descriptions (hypothesis) check
the service choice and the controlURL resolution against CPython's urljoin.
"""
import json
import os
import subprocess
from urllib.parse import urljoin

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from testkit.paths import ROOT

MP = os.path.join(ROOT, '.venv', 'bin', 'micropython')
UNITS = os.path.join(ROOT, 'tools', 'testkit', 'vm', 'upnp_units.py')
ENV = dict(os.environ, MICROPYPATH=':'.join(['.frozen'] + [os.path.join(ROOT, p) for p in
                                                           ('tools/sim/board', 'lib', '')]))
SERVICES = ['urn:schemas-upnp-org:service:WANIPConnection:2',
            'urn:schemas-upnp-org:service:WANIPConnection:1',
            'urn:schemas-upnp-org:service:WANPPPConnection:1']
OTHER = ['urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1',
         'urn:schemas-upnp-org:service:Layer3Forwarding:1', 'urn:dslforum-org:service:Time:1']

pytestmark = pytest.mark.timeout(120)


def vm(*args):
    r = subprocess.run([MP, UNITS] + list(args), env=ENV, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_fixed_cases():
    assert vm().strip() == 'OK'


seg = st.text('abcdefgABC0123456789_-', min_size=1, max_size=8)
path = st.lists(seg, min_size=1, max_size=3).map('/'.join)
control = st.one_of(path, path.map(lambda p: '/' + p),
                    path.map(lambda p: 'http://192.0.2.1:49000/' + p))
base = st.one_of(st.just('http://192.0.2.1:5000'), st.just('http://192.0.2.1:5000/'),
                 path.map(lambda p: 'http://192.0.2.1:5000/' + p + '.xml'),
                 path.map(lambda p: 'http://192.0.2.1:5000/' + p + '/'))
service = st.tuples(st.sampled_from(SERVICES + OTHER), control)
case = st.tuples(st.lists(service, max_size=5), base, st.sampled_from(['', 'd:']),
                 st.sampled_from(['', ' ', '\r\n  ']))


def render(services, prefix, ws):
    p = prefix
    body = ''.join('<%sservice>%s<%sserviceType>%s</%sserviceType><%sserviceId>x</%sserviceId>'
                   '<%scontrolURL>%s%s%s</%scontrolURL></%sservice>'
                   % (p, ws, p, t, p, p, p, p, ws, u.replace('&', '&amp;'), ws, p, p)
                   for t, u in services)
    ns = ' xmlns:d="urn:schemas-upnp-org:device-1-0"' if p else ''
    return '<?xml version="1.0"?><%sroot%s><%sdevice><%sserviceList>%s</%sserviceList></%sdevice>' \
           '</%sroot>' % (p, ns, p, p, body, p, p, p)


@settings(max_examples=2, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(case, min_size=100, max_size=100))
def test_generated_descriptions(tmp_path_factory, cases):
    want, batch = [], []
    for services, b, prefix, ws in cases:
        batch.append({'xml': render(services, prefix, ws), 'base': b})
        best = None
        for t, u in services:
            if t in SERVICES and (best is None or SERVICES.index(t) < SERVICES.index(best[0])):
                best = (t, u)
        want.append([best[0], urljoin(b, best[1])] if best else None)
    f = tmp_path_factory.mktemp('units') / 'cases.json'
    f.write_text(json.dumps(batch))
    got = json.loads(vm(str(f)))
    for g, w, c in zip(got, want, batch):
        assert g == w, c
