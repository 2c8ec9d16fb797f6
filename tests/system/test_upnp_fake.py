"""/open and /close on the MicroPython VM against tools/peers/fake_igd.py on loopback.

The fake's fidelity is checked first: Debian's real `upnpc` lists, adds and deletes on it.
"""
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from peers.fake_igd import FakeIGD  # noqa: E402
from testkit.helpers import need_binary
from testkit.netns.driver import VM

pytestmark = pytest.mark.timeout(90)
OUTSIDE = '203.0.113.50'
URL = re.compile(r'http://198\.51\.100\.7:(\d+)/stream\?key=([0-9a-f]{24})$', re.M)


@pytest.fixture
def igd():
    with FakeIGD() as fake:
        yield fake


@pytest.fixture
def make_vm(igd, tmp_path):
    vms = []

    def make(**upnp):
        upnp.setdefault('ssdp', '127.0.0.1:%d' % igd.ssdp_port)
        cfg = {'upnp': upnp, 'device': {'name': 'cam1'}}
        v = VM(str(tmp_path), cfg, lan='192.0.2.10/255.255.255.0')
        vms.append(v)
        return v
    yield make
    for v in vms:
        v.close()


def wait_for(fn, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    return fn()


# -- fidelity: the real client accepts the fake ------------------------------------------------

def test_upnpc_list_add_delete_on_the_fake(igd):
    upnpc = need_binary('upnpc', 'miniupnpc')

    def run(*args):
        r = subprocess.run([upnpc, '-u', igd.location] + list(args), capture_output=True,
                           text=True, timeout=30)
        return r.stdout + r.stderr

    out = run('-l')
    assert 'Found valid IGD : http://127.0.0.1:%d/ctl/IPConn' % igd.http_port in out
    assert 'ExternalIPAddress = 198.51.100.7' in out
    out = run('-e', 'fidelity', '-a', '127.0.0.1', '81', '54321', 'TCP', '600')
    assert 'is redirected to internal 127.0.0.1:81' in out, out
    assert igd.mapping(54321)['client'] == '127.0.0.1'
    out = run('-l')
    assert re.search(r"0 TCP 54321->127\.0\.0\.1:81\s+'fidelity'", out), out
    out = run('-d', '54321', 'TCP')
    assert 'UPNP_DeletePortMapping() returned : 0' in out, out
    assert igd.mapping(54321) is None
    # and the error path: a port another device holds
    igd.taken[54400] = '192.0.2.99'
    out = run('-a', '127.0.0.1', '81', '54400', 'TCP')
    assert '718' in out and 'ConflictInMappingEntry' in out, out


# -- open / close ------------------------------------------------------------------------------

def test_open_maps_the_stream_and_answers_a_keyed_url(igd, make_vm):
    vm = make_vm(lease_s=600)
    r = vm.call('open')
    assert r['ok'], r
    m = URL.search(r['text'])
    assert m and m.group(1) == '54321', r['text']
    key = m.group(2)
    got = igd.mapping(54321)
    assert (got['client'], got['port'], got['lease'], got['desc']) == ('192.0.2.10', 81, 600,
                                                                       'esp32cam cam1')
    assert igd.searches >= 1
    s = vm.call('status')['status']
    assert s['open'] and s['port'] == 54321 and s['key_required']
    assert key not in repr(s) and key not in vm.output().replace(r['text'].replace('\n', '\\n'), '')
    # a second /open does not make a second mapping or a new key
    r2 = vm.call('open')
    assert r2['ok'] and key in r2['text'] and 'Already open' in r2['text']
    assert [c[0] for c in igd.calls].count('AddPortMapping') == 1


def test_control_port_exposed_when_configured(igd, make_vm):
    vm = make_vm(expose='control', external_port=40000)
    r = vm.call('open')
    assert 'http://198.51.100.7:40000/?key=' in r['text'], r
    assert igd.mapping(40000)['port'] == 80


def test_close_deletes_the_mapping_and_revokes_the_key(igd, make_vm):
    vm = make_vm()
    key = URL.search(vm.call('open')['text']).group(2)
    assert vm.call('allows', peer=OUTSIDE, target='/stream?key=' + key)['allows']
    r = vm.call('close')
    assert r == {'ok': True, 'text': 'Port closed'}
    assert igd.mapping(54321) is None
    assert 'DeletePortMapping' in [c[0] for c in igd.calls]
    a = vm.call('allows', peer=OUTSIDE, target='/stream?key=' + key)
    assert a['required'] is False
    # reopening makes a fresh key
    key2 = URL.search(vm.call('open')['text']).group(2)
    assert key2 != key


def test_the_key_guards_the_exposed_server(igd, make_vm):
    vm = make_vm()
    assert vm.call('allows', peer=OUTSIDE, target='/stream')['allows'] is True  # nothing open
    key = URL.search(vm.call('open')['text']).group(2)
    cases = [
        (OUTSIDE, '/stream', None, False),
        (OUTSIDE, '/stream?key=' + key, None, True),
        (OUTSIDE, '/stream?a=1&key=' + key, None, True),
        (OUTSIDE, '/stream?key=' + key[:-1] + ('0' if key[-1] != '0' else '1'), None, False),
        (OUTSIDE, '/stream?key=' + key + 'x', None, False),
        (OUTSIDE, '/stream?key=', None, False),
        (OUTSIDE, '/stream?xkey=' + key, None, False),
        (OUTSIDE, '/status', 'a=b; camkey=' + key, True),
        (OUTSIDE, '/status', 'camkey=nope', False),
        ('192.0.2.33', '/stream', None, True),    # the LAN needs no key
        ('192.0.3.33', '/stream', None, False),
    ]
    for peer, target, cookie, want in cases:
        got = vm.call('allows', peer=peer, target=target, cookie=cookie)['allows']
        assert got is want, (peer, target, cookie)


def test_the_guard_on_a_microdot_server(igd, tmp_path):
    import urllib.error
    import urllib.request

    from testkit.helpers import free_port, wait_port
    port = free_port()
    vm = VM(str(tmp_path), {'upnp': {'ssdp': '127.0.0.1:%d' % igd.ssdp_port}},
            lan='192.0.2.10/255.255.255.0', web=port, heap='512K')  # 127.0.0.1: outside that LAN

    def get(path, cookie=None):
        rq = urllib.request.Request('http://127.0.0.1:%d%s' % (port, path))
        if cookie:
            rq.add_header('Cookie', cookie)
        try:
            with urllib.request.urlopen(rq, timeout=10) as r:
                return r.status, r.headers.get('Set-Cookie'), r.read()
        except urllib.error.HTTPError as e:
            return e.code, None, e.read()
    try:
        assert wait_port(port)
        assert get('/stream')[0] == 200  # nothing open: the server is as before
        key = URL.search(vm.call('open')['text']).group(2)
        code, _, body = get('/stream')
        assert code == 403 and b'key from /open' in body
        assert get('/stream?key=' + 'f' * 24)[0] == 403
        code, cookie, body = get('/stream?key=' + key)
        assert (code, body) == (200, b'frames')
        assert cookie.startswith('camkey=%s;' % key) and 'HttpOnly' in cookie
        assert get('/status', 'camkey=' + key)[0] == 200  # the page's own requests
        assert vm.call('status')['status']['denied'] == 2
        assert vm.call('close')['ok']
        assert get('/status', 'camkey=' + key)[0] == 200  # closed: LAN-only server again
        key2 = URL.search(vm.call('open')['text']).group(2)
        assert get('/status', 'camkey=' + key)[0] == 403  # the old key is revoked
        assert get('/status?key=' + key2)[0] == 200
    finally:
        vm.close()


# -- faults --------------------------------------------------------------------------------------

def test_port_conflict_moves_to_the_next_port(igd, make_vm):
    igd.taken = {54321: '192.0.2.99', 54322: '192.0.2.98'}
    vm = make_vm()
    r = vm.call('open')
    assert URL.search(r['text']).group(1) == '54323', r
    assert igd.mapping(54323)['client'] == '192.0.2.10'


def test_all_ports_taken_says_so(igd, make_vm):
    igd.taken = dict((p, '192.0.2.99') for p in range(54321, 54324))
    vm = make_vm(port_range=3)
    r = vm.call('open')
    assert not r['ok']
    assert '54321..54323 are all mapped to other devices (718)' in r['error'], r
    assert not vm.call('status')['status']['key_required']


def test_own_stale_mapping_is_reused(igd, make_vm):
    igd.taken = {54321: '192.0.2.10'}  # ours, e.g. from before a reset, refused by a strict router
    vm = make_vm()
    r = vm.call('open')
    assert URL.search(r['text']).group(1) == '54321', r


def test_permanent_lease_on_725(igd, make_vm):
    igd.permanent_only = True
    vm = make_vm(lease_s=600)
    r = vm.call('open')
    assert r['ok'] and 'Permanent mapping' in r['text'], r
    assert igd.mapping(54321)['lease'] == 0


@pytest.mark.parametrize('code,words', [
    (501, 'the router refuses to map the port (501'),
    (606, 'action not authorized (606)'),
])
def test_router_refusal_is_explained(igd, make_vm, code, words):
    igd.refuse = code
    vm = make_vm()
    r = vm.call('open')
    assert not r['ok'] and words in r['error'], r
    assert vm.call('status')['status']['error']


def test_no_router_found(make_vm, tmp_path):
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(('127.0.0.1', 0))  # a silent SSDP "router"
    try:
        vm = make_vm(ssdp='127.0.0.1:%d' % s.getsockname()[1])
        r = vm.call('open')
        assert not r['ok'] and 'no UPnP router (IGD) answered' in r['error'], r
        data, _ = s.recvfrom(2048)
        assert data.startswith(b'M-SEARCH * HTTP/1.1\r\n') and b'ssdp:discover' in data
    finally:
        s.close()


@pytest.mark.parametrize('version,service', [
    (2, None), (1, 'urn:schemas-upnp-org:service:WANPPPConnection:1')])
def test_igd2_and_ppp_services_are_found(tmp_path, version, service):
    with FakeIGD(version=version, service=service) as fake:
        vm = VM(str(tmp_path), {'upnp': {'ssdp': '127.0.0.1:%d' % fake.ssdp_port}},
                lan='192.0.2.10/255.255.255.0')
        try:
            r = vm.call('find')
            assert r['ok'] and r['service'] == fake.service, (r, vm.output())
            assert r['external'] == '198.51.100.7'
            r = vm.call('open')
            assert r['ok'], (r, vm.output())
            assert fake.mapping(54321), (fake.calls, vm.output())
        finally:
            vm.close()


# -- background: leases, router reboot, DDNS ---------------------------------------------------

def test_lease_is_renewed_before_it_runs_out(igd, make_vm):
    vm = make_vm(lease_s=3)
    assert vm.call('open')['ok']
    t0 = time.monotonic()
    # the fake forgets a mapping 3 s after the last add: it must still be there well after
    while time.monotonic() - t0 < 8:
        assert igd.mapping(54321), 'lease ran out at %.1fs:\n%s' % (time.monotonic() - t0, vm.output())
        time.sleep(0.2)
    assert vm.call('status')['status']['renewals'] >= 3
    assert vm.call('close')['ok']


def test_mapping_is_restored_after_a_router_reboot(igd, make_vm):
    vm = make_vm(lease_s=2)
    assert vm.call('open')['ok']
    igd.drop()
    assert wait_for(lambda: igd.mapping(54321), 10), vm.output()


def test_permanent_mapping_is_restored_at_the_address_check(igd, make_vm):
    igd.permanent_only = True
    vm = make_vm(check_s=10)
    assert 'Permanent mapping' in vm.call('open')['text']
    igd.drop()
    assert wait_for(lambda: igd.mapping(54321), 25), vm.output()


def test_address_change_is_texted(igd, make_vm):
    vm = make_vm(check_s=10)
    key = URL.search(vm.call('open')['text']).group(2)
    igd.external = '198.51.100.77'
    note = vm.note(timeout=30)
    assert note == 'Camera address changed: http://198.51.100.77:54321/stream?key=' + key, note
    assert vm.call('status')['status']['external'] == '198.51.100.77'
    assert vm.note(timeout=12) is None  # no repeat while nothing changes


def test_double_nat_warning(igd, make_vm):
    igd.public = '203.0.113.9'
    vm = make_vm(echo_url='http://127.0.0.1:%d/echo' % igd.http_port)
    r = vm.call('open')
    assert r['ok'] and 'public address is 203.0.113.9' in r['text'], r
    assert 'double NAT' in r['text']
    assert vm.call('status')['status']['public'] == '203.0.113.9'


def test_no_warning_when_public_matches(igd, make_vm):
    vm = make_vm(echo_url='http://127.0.0.1:%d/echo' % igd.http_port)
    r = vm.call('open')
    assert r['ok'] and 'NAT' not in r['text'], r


# -- shutdown and crashes ----------------------------------------------------------------------

def test_clean_shutdown_deletes_the_mapping(igd, make_vm):
    vm = make_vm()
    assert vm.call('open')['ok']
    s = vm.call('shutdown')['status']
    assert not s['open'] and not s['key_required']
    assert igd.mapping(54321) is None


def test_mapping_left_by_a_crash_is_deleted_at_boot(igd, make_vm):
    vm = make_vm()
    assert vm.call('open')['ok']
    vm.p.send_signal(signal.SIGKILL)
    vm.p.wait(5)
    assert igd.mapping(54321)
    vm2 = make_vm()  # same flash dir: finds upnp.json
    assert wait_for(lambda: igd.mapping(54321) is None, 15), vm2.output()
    s = wait_for(lambda: vm2.call('status')['status']['pending_delete'] == [], 5)
    assert s


def test_outsiders_are_refused_until_a_crash_leftover_is_deleted(igd, make_vm):
    vm = make_vm()
    assert vm.call('open')['ok']
    vm.p.send_signal(signal.SIGKILL)
    vm.p.wait(5)
    igd.faults = [('GetSpecificPortMappingEntry', 501)]  # the first cleanup attempt fails
    vm2 = make_vm()
    s = vm2.call('status')['status']
    assert s['pending_delete'] == [54321] and s['key_required'] and not s['open']
    a = vm2.call('allows', peer=OUTSIDE, target='/stream')
    assert a['allows'] is False, 'a forward is left on the router and nothing guards it'
    assert vm2.call('allows', peer='192.0.2.40', target='/stream')['allows'] is True
    # /open meanwhile takes the port over: it is ours again, not deleted by the cleanup
    assert URL.search(vm2.call('open')['text']).group(1) == '54321'
    assert vm2.call('status')['status']['pending_delete'] == []
    time.sleep(1.5)
    assert igd.mapping(54321)


def test_crash_cleanup_spares_a_port_another_device_took(igd, make_vm):
    vm = make_vm()
    assert vm.call('open')['ok']
    vm.p.send_signal(signal.SIGKILL)
    vm.p.wait(5)
    igd.drop()
    igd.taken = {54321: '192.0.2.99'}
    vm2 = make_vm()
    assert wait_for(lambda: vm2.call('status')['status']['pending_delete'] == [], 15), vm2.output()
    assert 'DeletePortMapping' not in [c[0] for c in igd.calls]


def test_heap_churn_of_open_and_close(igd, tmp_path):
    """Every test here runs on a 192 KiB heap (the driver compiles the modules from source); this one records what one /open costs."""
    vm = VM(str(tmp_path), {'upnp': {'ssdp': '127.0.0.1:%d' % igd.ssdp_port}},
            lan='192.0.2.10/255.255.255.0', heap='1M')
    try:
        o = vm.call('measure', what='open')
        c = vm.call('measure', what='close')
    finally:
        vm.close()
    print('\nheap: /open allocates %d bytes in %d ms, /close %d bytes in %d ms (free before: %d)'
          % (o['alloc'], o['ms'], c['alloc'], c['ms'], o['free']))
    assert o['text'].startswith('Open: ') and c['text'] == 'Port closed'
    assert o['alloc'] < 96 * 1024 and c['alloc'] < 32 * 1024  # mostly the HTTP client's buffers
