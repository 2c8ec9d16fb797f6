"""The firmware's UPnP client against Debian's real miniupnpd, in network namespaces.

camera (MicroPython VM) -- router (miniupnpd) -- isp; documentation addresses only. miniupnpd
finds its WAN address reserved and refuses mappings (501): discovery, description and SOAP must
work, and /open must fail with the router's refusal in words.
"""
import os
import subprocess
import tempfile
import time

import pytest
from testkit.helpers import CI, need_binary
from testkit.netns.driver import VM
from testkit.netns.topology import (
    CAMERA,
    ROUTER_LAN,
    Topology,
    Unavailable,
    miniupnpd_conf,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope='module')
def router():
    need_binary('miniupnpd')
    need_binary('ip', 'iproute2')
    try:
        topo = Topology().create()
    except Unavailable as e:
        if CI:
            pytest.fail('CI must run the miniupnpd test: %s' % e)
        pytest.skip(str(e))
    d = tempfile.mkdtemp()
    conf = miniupnpd_conf(os.path.join(d, 'miniupnpd.conf'))
    log = open(os.path.join(d, 'miniupnpd.log'), 'w+')
    p = subprocess.Popen(topo.ns(topo.router) + ['miniupnpd', '-f', conf, '-d', '-P',
                         os.path.join(d, 'pid')], stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):  # until its HTTP port answers
            r = topo.run(topo.camera, 'bash', '-c', 'exec 3<>/dev/tcp/%s/5000' % ROUTER_LAN,
                         check=False)
            if r.returncode == 0 or p.poll() is not None:
                break
            time.sleep(0.1)
        assert p.poll() is None, 'miniupnpd exited: ' + open(log.name).read()
        yield topo, log.name
    finally:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
        topo.destroy()


@pytest.fixture
def vm(router, tmp_path):
    topo, _ = router
    cfg = {'upnp': {'lease_s': 600}, 'device': {'name': 'nscam'}}  # default SSDP: real multicast
    v = VM(str(tmp_path), cfg, lan=CAMERA + '/255.255.255.0', prefix=topo.ns(topo.camera))
    yield v
    v.close()


def test_discovery_description_and_soap(vm, router):
    r = vm.call('find')
    assert r['ok'], r
    assert r['control'] == 'http://%s:5000/ctl/IPConn' % ROUTER_LAN
    assert r['service'].startswith('urn:schemas-upnp-org:service:WANIPConnection:')
    # miniupnpd will not report a reserved WAN address as the external one
    assert r['external'] in ('', '0.0.0.0'), r
    r = vm.call('entry', port=54321)  # GetSpecificPortMappingEntry: 714 -> no mapping
    assert r == {'ok': True, 'entry': None}, r
    log = open(router[1]).read()
    assert 'SSDP M-SEARCH from %s' % CAMERA in log
    assert 'GET /rootDesc.xml' in log


def test_open_refused_with_a_clear_message(vm, router):
    r = vm.call('open')
    assert not r['ok']
    assert r['error'].startswith('cannot open a port: the router refuses to map the port (501')
    s = vm.call('status')['status']
    assert not s['open'] and not s['key_required'] and s['port'] is None
    assert 'AddPortMapping' in open(router[1]).read()
    r = vm.call('close')
    assert r == {'ok': True, 'text': 'Port closed (none was open)'}
