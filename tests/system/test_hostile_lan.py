"""Issue 17, "A hostile LAN": what anyone on the network (or a web page in a LAN browser) could do
without the admin login, and what they can do now. Each test reproduces one numbered symptom.

The firmware runs on the MicroPython VM with the simulated camera; every client is on loopback;
every wait is bounded and polls.
"""
import base64
import json
import socket
import threading
import time

import pytest
from testkit import helpers
from testkit.peers import alarm, frames_after, wait

pytestmark = pytest.mark.timeout(90)


class Flipper(threading.Thread):
    """GET /control?var=framesize every 0.5 s, QVGA and VGA in turn, without logging in."""

    def __init__(self, dev, auth=None):
        super().__init__(daemon=True)
        self.dev = dev
        self.auth = auth
        self.codes = []
        self.stop = threading.Event()

    def run(self):
        val = 5
        while not self.stop.is_set() and len(self.codes) < 200:
            try:
                code = self.dev.get('control', '/control?var=framesize&val=%d' % val,
                                    auth=self.auth, timeout=5)[0]
            except OSError as e:       # a slow answer on a loaded machine: note it, go on
                code = repr(e)
            self.codes.append(code)
            val = 8 if val == 5 else 5
            self.stop.wait(0.5)


def walk_through_alarms(dev, flipper, within=10):
    """Arm, let the detector settle, start flipping, walk through: seconds until the alarm."""
    assert dev.admin('arm')[0] == 200
    frames_after(dev, 10)
    flipper.start()
    try:
        wait(lambda: len(flipper.codes) >= 3, 10, 'the flipping has started')
        t0 = time.monotonic()
        dev.board.control('camera', motion=True)
        wait(lambda: alarm(dev)['alarms'] >= 1, within, 'an alarm while the frame size flips')
        return time.monotonic() - t0
    finally:
        flipper.stop.set()
        flipper.join(10)


# --- (1) the armed alarm cannot be blinded from the LAN ------------------------------------------

def test_framesize_flipping_from_the_lan_while_armed_no_longer_blinds_the_alarm(firmware):
    """Issue 17 (1): framesize changed through the unauthenticated control port every 0.5 s kept
    the detector in warm-up: a walk-through produced no alarm in 20 s. Now the changes are
    refused while armed (control.open is empty by default) and the walk-through alarms."""
    dev = firmware({'alarm': {'event_gap_s': 1}})
    f = Flipper(dev)
    walk_through_alarms(dev, f)
    assert f.codes and set(f.codes) == {401}, f.codes
    assert dev.status()['camera']['framesize'] == 'VGA'
    assert dev.wait_console('refused: the alarm is armed')
    # the owner with the login may still change it, and that is logged with its origin
    code = dev.get('control', '/control?var=framesize&val=5', auth=('admin', 'test-admin-pw'))[0]
    assert code == 200
    assert dev.wait_console('camera: framesize = 5 from control port, 127.0.0.1 (admin)')


def test_even_an_opened_framesize_cannot_blind_the_detector(firmware):
    """With framesize in control.open (the owner allowed it), flipping it while armed still never
    puts the detector back in warm-up: it keeps its own grid and the walk-through alarms."""
    dev = firmware({'alarm': {'event_gap_s': 1}, 'control': {'open': ['framesize']}})
    f = Flipper(dev)
    walk_through_alarms(dev, f)
    assert 200 in f.codes, f.codes
    assert dev.wait_console('detection stays at 640x480')


def test_disarmed_the_control_port_stays_open_like_camerawebserver(firmware):
    dev = firmware()
    assert dev.get('control', '/control?var=quality&val=20')[0] == 200
    assert json.loads(dev.get('control', '/status')[2])['quality'] == 20
    assert dev.wait_console('camera: quality = 20 from control port, 127.0.0.1')


def test_a_page_of_another_site_cannot_drive_the_camera(firmware):
    """Issue 17 (1): a cross-site <img> in a LAN browser changed framesize and quality."""
    dev = firmware()
    for h in ({'Sec-Fetch-Site': 'cross-site', 'Sec-Fetch-Dest': 'image'},
              {'Origin': 'http://evil.example'}):
        code, _, body = dev.get('control', '/control?var=quality&val=40', headers=h)
        assert code == 403, (h, code, body)
    assert json.loads(dev.get('control', '/status')[2])['quality'] == 12


# --- (3) cross-origin reads ----------------------------------------------------------------------

def test_no_page_of_another_origin_can_read_a_snapshot_or_the_state(firmware):
    """Issue 17 (3): every response carried Access-Control-Allow-Origin: *, so a page on another
    origin read the full JPEG from /capture."""
    dev = firmware()
    evil = {'Origin': 'http://evil.example'}
    for kind, path in (('control', '/capture'), ('control', '/status'), ('control', '/ports'),
                       ('stream', '/?action=snapshot'), ('control', '/nope')):
        code, h, _ = dev.get(kind, path, headers=evil)
        assert 'Access-Control-Allow-Origin' not in h, (path, h)
    code, h, _ = dev.get('control', '/')
    assert h['Referrer-Policy'] == 'no-referrer' and h['X-Frame-Options'] == 'DENY'
    assert "frame-ancestors 'none'" in h['Content-Security-Policy']
    code, h, _ = dev.get('admin', '/', auth=('admin', 'test-admin-pw'))
    assert h['X-Frame-Options'] == 'DENY' and h['Referrer-Policy'] == 'no-referrer'


def test_a_configured_origin_may_read(firmware):
    dev = firmware({'http': {'cors_origins': ['http://nvr.lan:8000']}})
    code, h, _ = dev.get('control', '/status', headers={'Origin': 'http://nvr.lan:8000'})
    assert code == 200 and h['Access-Control-Allow-Origin'] == 'http://nvr.lan:8000'
    code, h, _ = dev.get('control', '/capture', headers={'Origin': 'http://other.lan'})
    assert 'Access-Control-Allow-Origin' not in h


# --- (8) the admin Origin check ------------------------------------------------------------------

def post(dev, action, headers, data=b''):
    return dev.get('admin', '/action/' + action, auth=('admin', 'test-admin-pw'), data=data,
                   headers=headers)


def test_admin_post_from_a_browser_needs_a_matching_origin(firmware):
    """Issue 17 (8): a POST without Origin, or with Origin https://<host>, passed the check."""
    dev = firmware()
    host = '127.0.0.1:%d' % dev.ports['admin']
    refused = [
        {'Origin': 'https://' + host},                                  # wrong scheme
        {'Origin': 'http://evil.example'},
        {'Origin': 'null'},
        {'Sec-Fetch-Site': 'cross-site', 'Sec-Fetch-Mode': 'navigate'},  # no Origin, a browser
        {'User-Agent': 'Mozilla/5.0 (X11; Linux x86_64)'},
        {'Referer': 'http://evil.example/page'},
    ]
    for h in refused:
        code, _, body = post(dev, 'arm', h)
        assert code == 403, (h, code, body)
    assert dev.status()['alarm']['state'] == 'disarmed'
    # the page itself, and a script or curl with credentials, keep working
    assert post(dev, 'arm', {'Origin': 'http://' + host, 'Sec-Fetch-Site': 'same-origin'})[0] == 200
    assert post(dev, 'disarm', {'User-Agent': 'curl/8.5.0'})[0] == 200
    assert dev.status()['alarm']['state'] == 'disarmed'


def test_sleep_with_an_infinite_number_is_a_bad_request(firmware):
    """Issue 17 (8): {"seconds": 1.5e400} answered 503 internal error: OverflowError."""
    dev = firmware()
    code, _, body = post(dev, 'sleep', {'Content-Type': 'application/json'},
                         data=b'{"seconds": 1.5e400}')
    assert code == 400 and b'seconds must be an integer' in body, (code, body)
    assert dev.status()['boot']   # still up


# --- (5) login throttling ------------------------------------------------------------------------

def test_password_guessing_is_throttled_per_client_and_reported(firmware):
    """Issue 17 (5): 21,203 guesses were checked in 10 s and the right password still worked 2 ms
    later. Now after a few wrong guesses a client waits, doubling, before its next guess is even
    checked; the status says so."""
    dev = firmware()
    codes = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < 3 and len(codes) < 500:
        codes.append(dev.get('admin', '/status', auth=('admin', 'guess-%d' % len(codes)))[0])
    assert codes[:3] == [401, 401, 401], codes[:5]
    assert codes.count(401) <= 6, codes.count(401)      # 3 free, then 1 s, 2 s between guesses
    assert 429 in codes
    # right after a counted failure (a 401, then a 429): the backoff has just begun, so the
    # right password comes while it runs (at the 3 s mark above it could just have ended)
    while not (codes[-2:] == [401, 429]) and time.monotonic() - t0 < 20:
        codes.append(dev.get('admin', '/status', auth=('admin', 'guess-%d' % len(codes)))[0])
    code, h, body = dev.get('admin', '/status', auth=('admin', 'test-admin-pw'))
    assert code == 429 and int(h['Retry-After']) >= 1, (code, body)   # even the right one waits
    # from another address the owner still gets in, and sees the throttling
    st = json.loads(get_from('127.0.0.2', dev.ports['admin'], '/status', ('admin', 'test-admin-pw')))
    assert st['login']['failed'] >= 3 and st['login']['throttled'] >= 1
    assert st['login']['clients_waiting'] == 1


def get_from(src, port, path, auth):
    """The body of a GET from another loopback source address (127.0.0.2 is another client)."""
    head, _, body = helpers.get_from(src, port, path, auth).partition(b'\r\n\r\n')
    assert b' 200 ' in head.split(b'\r\n')[0], head
    return body


# --- (6) evidence that survives a flood ----------------------------------------------------------

def test_a_flood_of_garbage_does_not_erase_the_owners_actions(firmware):
    """Issue 17 (6): 60 garbage requests in 0.04 s pushed the owner's "disarm" out of the log."""
    dev = firmware({'log': {'lines': 20}})
    assert dev.admin('arm')[0] == 200
    assert dev.admin('disarm')[0] == 200
    for i in range(60):
        s = socket.create_connection(('127.0.0.1', dev.ports['control']), timeout=5)
        s.sendall(b'GARBAGE %d\r\n\r\n' % i)
        try:
            s.recv(1024)
        except OSError:
            pass
        s.close()
    st = dev.status()
    assert not any('command disarm' in line for line in st['log'][-5:])  # pushed down the main log
    ev = [line for _, line in st['evidence']]
    assert any('command disarm from http' in line for line in ev), ev
    assert any('alarm disarmed' in line for line in ev), ev


# --- (7) a broken state file -------------------------------------------------------------------

def test_a_broken_alarm_state_file_is_moved_aside(firmware, tmp_path):
    flash = tmp_path / 'flash'
    flash.mkdir()
    (flash / 'alarm.json').write_text('[1]')
    dev = firmware()
    assert dev.status()['alarm']['state'] == 'disarmed'
    assert (flash / 'alarm.json.bad').read_text() == '[1]'
    assert dev.wait_console('alarm.json: must be a JSON object; moved to alarm.json.bad')
    assert dev.admin('arm')[0] == 200
    assert json.loads((flash / 'alarm.json').read_text())['state'] == 'armed'


# --- (4) connections -----------------------------------------------------------------------------

def test_idle_connections_are_closed_when_their_request_does_not_come(firmware):
    """Issue 17 (4): 200 idle connections on the stream port stayed open 71 s (0 closed). Now a
    request not complete within http.request_timeout_s is closed (each holds a board's socket)."""
    dev = firmware({'http': {'request_timeout_s': 2}})
    socks = []
    for i in range(8):
        s = socket.socket()
        s.bind(('127.0.0.%d' % (10 + i), 0))       # 8 clients, within every connection cap
        s.settimeout(10)
        s.connect(('127.0.0.1', dev.ports['stream']))
        s.sendall(b'GET /stream HTTP/1.1\r\nHost: x\r\n')   # never finished
        socks.append(s)
    t0 = time.monotonic()
    closed = 0
    for s in socks:
        try:
            if s.recv(1024) == b'':
                closed += 1
        except OSError:
            closed += 1
        s.close()
    assert closed == 8 and time.monotonic() - t0 < 8, (closed, time.monotonic() - t0)
    assert dev.status()['connections']['timeouts'] >= 8
    # and the port still serves
    assert dev.get('control', '/status')[0] == 200


def test_a_viewer_that_loses_the_race_never_gets_200_without_frames(firmware):
    """Issue 17 (4): when several viewers connected at once, the one that lost the race for the
    last slot got `200 OK` and no frames. Now every answer is either 503 or a stream."""
    dev = firmware({'camera': {'framesize': 'QVGA'}, 'http': {'max_viewers': 2}})
    socks = [socket.create_connection(('127.0.0.1', dev.ports['stream']), timeout=10)
             for _ in range(8)]
    for s in socks:
        s.sendall(b'GET /stream HTTP/1.1\r\nHost: x\r\n\r\n')
    outcome = []
    for s in socks:
        data = b''
        try:
            while b'\xff\xd8' not in data and len(data) < 200000:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        status = data.split(b' ', 2)[1] if data.startswith(b'HTTP/') else b'?'
        outcome.append((status, b'\xff\xd8' in data))
        s.close()
    assert sorted(outcome) == [(b'200', True)] * 2 + [(b'503', False)] * 6, outcome


def test_a_viewer_that_falls_behind_is_dropped_and_its_next_request_refused(firmware):
    """Issue 17 (4): eight viewers reading a few KB/s held every slot indefinitely. Now a viewer
    that falls several frames behind for a few seconds is dropped, and the same client's next
    request gets 503 with Retry-After, while a good viewer keeps streaming."""
    from testkit.helpers import MjpegReader
    dev = firmware()
    good = MjpegReader(dev.ports['stream'])
    good.frame()
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.bind(('127.0.0.2', 0))
    slow.settimeout(10)
    slow.connect(('127.0.0.1', dev.ports['stream']))
    slow.sendall(b'GET /stream HTTP/1.1\r\nHost: x\r\n\r\n')
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 15 and dev.status()['stream']['dropped_lagging'] == 0:
            good.frame()                               # the good viewer keeps the camera going
    finally:
        slow.close()
    took = time.monotonic() - t0
    st = dev.status()['stream']
    assert st['dropped_lagging'] == 1 and took < 9, (st, took)
    assert dev.wait_console('dropping a viewer at 127.0.0.2')   # the console file trails the status
    # the greedy client's next request: 503 with Retry-After; the good viewer still streams
    s = socket.socket()
    s.bind(('127.0.0.2', 0))
    s.settimeout(10)
    s.connect(('127.0.0.1', dev.ports['stream']))
    s.sendall(b'GET /stream HTTP/1.1\r\nHost: x\r\n\r\n')
    head = b''
    while b'\r\n\r\n' not in head:          # microdot writes the head line by line
        chunk = s.recv(4096)
        if not chunk:
            break
        head += chunk
    s.close()
    assert head.startswith(b'HTTP/1.0 503') and b'Retry-After' in head, head
    for _ in range(5):
        good.frame()
    good.close()


def test_one_address_cannot_take_every_connection(firmware):
    """A client holds at most http.per_client connections on a port; a new one replaces its
    oldest, so a flood from one address never stops another client."""
    dev = firmware({'http': {'per_client': 3, 'request_timeout_s': 30}})
    socks = []
    for _ in range(40):
        s = socket.create_connection(('127.0.0.1', dev.ports['control']), timeout=10)
        socks.append(s)
    wait(lambda: dev.status()['connections']['evicted'] >= 30, 10, 'the flood evicted itself')
    body = get_from('127.0.0.2', dev.ports['control'], '/status', ('x', 'y'))
    assert json.loads(body)['framesize'] == 8
    for s in socks:
        s.close()


def test_a_clients_own_requests_are_never_cut_off_mid_answer(firmware):
    """The admin page saw "Failed to fetch" now and then: a browser sends a page's requests over
    parallel connections, and a client's third connection on the admin port closed its oldest
    while that one was being answered (an update upload, say). Now the newcomer takes a free
    socket of the port's share or waits its turn with a 503 and Retry-After; what was being
    answered finishes."""
    from conftest import ADMIN
    dev = firmware()
    port = dev.ports['admin']
    token = base64.b64encode(('%s:%s' % ADMIN).encode()).decode()

    def connect():
        s = socket.create_connection(('127.0.0.1', port), timeout=10)
        return s

    def answer(s):
        data = b''
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError as e:
            data += repr(e).encode()
        s.close()
        return data

    # two uploads whose heads are in and whose bodies are still coming: being answered
    uploads = []
    for _ in range(2):
        s = connect()
        s.sendall(('POST /settings HTTP/1.0\r\nHost: x\r\nAuthorization: Basic %s\r\n'
                   'Content-Type: application/json\r\nContent-Length: 12\r\n\r\n{"log"' % token).encode())
        uploads.append(s)
    # asked from another address: a third connection of this one is what the test is about
    wait(lambda: json.loads(get_from('127.0.0.2', port, '/status', ADMIN))['connections']['open'] >= 3,
         10, 'both uploads being read')
    s = connect()
    s.sendall(('GET /status HTTP/1.0\r\nHost: x\r\nAuthorization: Basic %s\r\n\r\n' % token).encode())
    third = answer(s)
    for u in uploads:
        u.sendall(b': {}}\r\n')
    got = [answer(u) for u in uploads]
    for g in got:
        assert g.startswith(b'HTTP/1.0 '), ('an upload was cut off', got)
    assert third.startswith(b'HTTP/1.0 200') or (
        third.startswith(b'HTTP/1.0 503') and b'Retry-After' in third), third
