"""System tests of the foundation: the firmware on the MicroPython VM, real sockets, real clients."""
import io
import json
import os
import socket
import struct
import subprocess
import threading
import time

from PIL import Image
from testkit.helpers import MjpegReader, first_frames

CWS_KEYS = ('framesize', 'quality', 'brightness', 'contrast', 'saturation', 'sharpness',
            'special_effect', 'wb_mode', 'awb', 'awb_gain', 'aec', 'aec2', 'ae_level', 'aec_value',
            'agc', 'agc_gain', 'gainceiling', 'bpc', 'wpc', 'raw_gma', 'lenc', 'hmirror', 'vflip',
            'dcw', 'colorbar', 'led_intensity')
# What each camera driver family can apply on an OV2640: micropython-camera-driver has nine
# setter functions; micropython-camera-API sets every sensor property the OV2640 has (no
# sharpness). The flash LED (led_intensity) is the firmware's own, on either (test_flash_led.py).
APPLIED = {
    'functions': ('framesize', 'quality', 'brightness', 'contrast', 'saturation', 'special_effect',
                  'wb_mode', 'vflip', 'hmirror', 'led_intensity'),
    'class': tuple(k for k in CWS_KEYS if k != 'sharpness'),
}


def jpeg_size(data):
    im = Image.open(io.BytesIO(data))
    im.load()
    return im.size


def test_control_page_status_and_no_cors(firmware):
    dev = firmware()
    code, h, body = dev.get('control', '/')
    assert code == 200 and b'<img id="view"' in body
    code, _, body = dev.get('control', '/ports')                 # how the page finds the stream
    assert json.loads(body) == {'stream': dev.ports['stream'], 'admin': dev.ports['admin']}
    code, h, body = dev.get('control', '/status')
    assert code == 200 and 'Access-Control-Allow-Origin' not in h   # docs/security.md
    status = json.loads(body)
    family = dev.status()['camera']['driver']
    # only what reaches the sensor, plus the keys CameraWebServer clients read
    assert set(status) == set(APPLIED[family]) | {'xclk', 'pixformat'}, status
    assert status['framesize'] == 8 and status['quality'] == 12   # VGA, as configured
    assert status['xclk'] == 10 and status['pixformat'] == 4      # 10 MHz, JPEG


def test_every_control_applies_or_is_refused(firmware):
    """Each CameraWebServer variable either reaches the sensor or is refused with a 501 that says
    so; none answers 200 without doing anything."""
    dev = firmware()
    family = dev.status()['camera']['driver']
    values = {'framesize': 5, 'quality': 20, 'special_effect': 2, 'wb_mode': 3, 'aec_value': 300,
              'agc_gain': 5, 'gainceiling': 2, 'brightness': 1, 'contrast': -1, 'saturation': 2,
              'ae_level': -1, 'sharpness': 1, 'led_intensity': 0}
    for var in CWS_KEYS:
        val = values.get(var, 0)
        code, _, body = dev.get('control', '/control?var=%s&val=%d' % (var, val))
        if var in APPLIED[family]:
            assert code == 200, (var, body)
            status = json.loads(dev.get('control', '/status')[2])
            assert status[var] == val, (var, status)
        else:
            assert code == 501 and var.encode() in body and b'cannot be set' in body, (var, body)
            assert var not in json.loads(dev.get('control', '/status')[2])
    # what reached the simulated sensor (camera_sensor.json, written by the stand-in)
    sensor_name = {'awb': 'whitebal', 'agc': 'gain_ctrl', 'aec': 'exposure_ctrl'}
    want = dict((sensor_name.get(v, v), values.get(v, 0)) for v in APPLIED[family]
                if v not in ('framesize', 'quality', 'led_intensity'))

    def applied():
        got = dev.board.read('camera_sensor', {}) or {}
        return all(got.get(k) == v for k, v in want.items())
    end = time.time() + 10
    while not applied() and time.time() < end:
        time.sleep(0.1)
    assert applied(), (dev.board.read('camera_sensor', {}), want)


def test_capture_headers_and_framesize_changes_the_jpeg(firmware):
    dev = firmware()
    # X-Timestamp is the wall clock: the board's starts at 2000 until NTP (the fixture's) sets it
    deadline = time.monotonic() + 15
    while dev.status()['time'] == 'time not set' and time.monotonic() < deadline:
        time.sleep(0.1)
    code, h, body = dev.get('control', '/capture')
    assert code == 200 and h['Content-Type'] == 'image/jpeg'
    assert h['Content-Disposition'] == 'inline; filename=capture.jpg'
    assert 'Access-Control-Allow-Origin' not in h
    sec, usec = h['X-Timestamp'].split('.')
    assert int(sec) > 1_600_000_000 and len(usec) == 6
    assert jpeg_size(body) == (640, 480)
    code, _, _ = dev.get('control', '/control?var=framesize&val=5')   # QVGA
    assert code == 200
    time.sleep(0.2)
    code, _, body = dev.get('control', '/capture')
    assert jpeg_size(body) == (320, 240)
    assert json.loads(dev.get('control', '/status')[2])['framesize'] == 5
    # the stream follows too
    r = MjpegReader(dev.ports['stream'])
    _, jpeg = r.frame()
    r.close()
    assert jpeg_size(jpeg) == (320, 240)


def test_control_errors_follow_camerawebserver(firmware):
    dev = firmware()
    assert dev.get('control', '/control?var=quality')[0] == 404          # missing val
    assert dev.get('control', '/control')[0] == 404                      # missing both
    code, _, body = dev.get('control', '/control?var=nosuch&val=1')
    assert code == 500 and b'nosuch' in body                             # unknown var
    code, _, body = dev.get('control', '/control?var=quality&val=5')
    assert code == 400 and b'10..63' in body                             # out of range
    code, _, body = dev.get('control', '/control?var=quality&val=abc')
    assert code == 400 and b'integer' in body
    code, _, body = dev.get('control', '/nowhere')
    assert code == 404
    assert dev.get('control', '/control?var=quality&val=20')[0] == 200
    assert json.loads(dev.get('control', '/status')[2])['quality'] == 20
    # an oversized request is refused by its declared length and the server keeps answering
    # (the body is not sent: a server that closes with 20 KB unread resets the connection, and
    # the client may lose the answer to that reset, whatever the server said)
    with socket.create_connection(('127.0.0.1', dev.ports['control']), timeout=10) as s:
        s.sendall(b'POST /status HTTP/1.1\r\nHost: x\r\nContent-Length: 20000\r\n\r\n')
        head = s.recv(4096)
    assert head.startswith(b'HTTP/1.') and head.split()[1] == b'413', head[:80]
    assert dev.get('control', '/status')[0] == 200


def test_oversized_header_line_and_garbage_do_not_kill_servers(firmware):
    dev = firmware()
    for port in dev.ports.values():
        for payload in (b'GET /' + b'a' * 5000 + b' HTTP/1.0\r\n\r\n', b'\x00\xff' * 100 + b'\r\n\r\n',
                        b'GET / HTTP/1.0\r\n' + b'X: y\r\n' * 50 + b'\r\n'):
            s = socket.create_connection(('127.0.0.1', port), timeout=5)
            s.sendall(payload)
            try:
                s.recv(1000)
            except OSError:
                pass
            s.close()
    assert dev.get('control', '/status')[0] == 200
    assert dev.get('admin', '/status', auth=('admin', 'test-admin-pw'))[0] == 200
    r = MjpegReader(dev.ports['stream'])
    assert r.status == 200
    r.frame()
    r.close()


def test_both_stream_dialects_and_snapshot(firmware):
    dev = firmware()
    r = MjpegReader(dev.ports['stream'], '/stream')
    assert r.status == 200
    assert r.headers['content-type'] == 'multipart/x-mixed-replace;boundary=123456789000000000000987654321'
    h, jpeg = r.frame()
    assert h['content-type'] == 'image/jpeg' and 'x-timestamp' in h
    assert jpeg[:2] == b'\xff\xd8' and jpeg[-2:] == b'\xff\xd9'
    r.close()
    r = MjpegReader(dev.ports['stream'], '/?action=stream')
    assert r.headers['content-type'] == 'multipart/x-mixed-replace;boundary=boundarydonotcross'
    for _ in range(3):
        _, jpeg = r.frame()
        assert jpeg_size(jpeg) == (640, 480)
    r.close()
    code, h, body = dev.get('stream', '/?action=snapshot')
    assert code == 200 and h['Content-Type'] == 'image/jpeg' and jpeg_size(body) == (640, 480)
    assert dev.get('stream', '/?action=bogus')[0] == 400


def read_frames(port, n, out, idx, path='/stream'):
    r = MjpegReader(port, path, timeout=20)
    stamps = []
    for _ in range(n):
        h, jpeg = r.frame()
        assert jpeg[:2] == b'\xff\xd8'
        stamps.append(h['x-timestamp'])
    r.close()
    out[idx] = stamps


def read_concurrently(port, n, viewers, timeout):
    """`viewers` clients at once each read n frames; returns each one's X-Timestamps."""
    out = [None] * viewers
    threads = [threading.Thread(target=read_frames, args=(port, n, out, i)) for i in range(viewers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    return out


def test_viewers_share_one_capture(firmware):
    dev = firmware({'camera': {'framesize': 'QVGA'}})
    n, viewers = 30, 4
    before = dev.stats().get('captures', 0)
    out = read_concurrently(dev.ports['stream'], n, viewers, 60)
    assert all(o and len(o) == n for o in out), 'every viewer got %d valid JPEGs' % n
    time.sleep(0.3)
    captures = dev.stats()['captures'] - before
    # One capture feeds every viewer: 4 viewers x 30 frames came from far fewer than 120 captures.
    assert captures < n * 2 + 10, (captures, n * viewers)
    shared = set(out[0]) & set(out[1]) & set(out[2]) & set(out[3])
    assert len(shared) >= n // 2, 'viewers received the same captured frames'


def test_four_vga_viewers_stream_in_a_384k_heap(firmware, make_build):
    """The foundation's memory goal as behaviour: precompiled as on a board and held to a small
    heap, four VGA viewers each receive whole frames. (The capture loop used to keep the last
    frame alive while capturing the next, and then no small heap streamed anything at all.)
    The goal was 256K; the features of this round (update over the air, the hostile-LAN
    defences, both camera families, the LFCP rules) grew the boot heap by ~62 KB on this 64-bit
    VM, 18 KB of it MicroPython's interned-name table stepping from 6 to 7 pools: 304K fails,
    320K streamed (docs/benchmarks.md). Freezing the firmware into the image puts those names
    and the bytecode in flash. Then the simulator's sockets took lwIP's 5760-byte buffers: a
    viewer holds its frame until its client has taken all of it, as on a board, where Linux had
    taken a whole frame in one write; 320K then failed now and then, 384K streams
    (docs/reliability.md)."""
    make_build()
    dev = firmware(heapsize='384K', mpy=True)
    n, viewers = 50, 4
    out = read_concurrently(dev.ports['stream'], n, viewers, 90)
    assert all(o and len(o) == n for o in out), ([len(o or ()) for o in out], dev.board.console()[-2000:])
    code, _, body = dev.get('stream', '/?action=snapshot')
    assert code == 200 and jpeg_size(body) == (640, 480)
    console = dev.board.console()
    assert 'MemoryError' not in console
    # a copy of the frame that raised MemoryError leaks the driver's only frame buffer: every
    # capture after it waits 4 s and fails until the driver is restarted
    assert 'Failed to get frame' not in console, console[-2000:]


def test_viewer_limit_gives_503_and_disconnects_free_slots(firmware):
    dev = firmware({'http': {'max_viewers': 2}})
    a = MjpegReader(dev.ports['stream'])
    b = MjpegReader(dev.ports['stream'])
    a.frame(), b.frame()
    code, h, body = dev.get('stream', '/stream', timeout=5)
    assert code == 503 and b'too many viewers' in body and h.get('Retry-After')
    # an abrupt disconnect (RST) frees the slot
    a.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    a.close()
    deadline = time.time() + 10
    while time.time() < deadline and dev.status()['stream']['viewers'] != 1:
        time.sleep(0.1)
    c = MjpegReader(dev.ports['stream'])
    assert c.status == 200
    c.frame()
    b.close(), c.close()


def fd_count(pid):
    import os
    return len(os.listdir('/proc/%d/fd' % pid))


def test_a_burst_of_viewers_cannot_pass_the_viewer_limit(firmware):
    """Every connection of a burst passes the limit check before any has sent its headers and
    registered: the slot is taken where the viewer registers, so the limit holds."""
    dev = firmware({'http': {'max_viewers': 2}})
    port = dev.ports['stream']
    socks = []
    for _ in range(8):
        s = socket.create_connection(('127.0.0.1', port), timeout=10)
        socks.append(s)
    for s in socks:
        s.sendall(b'GET /stream HTTP/1.1\r\n\r\n')
    try:
        end = time.monotonic() + 10
        st = dev.status()
        while st['stream']['refused'] < 6 and time.monotonic() < end:
            time.sleep(0.2)
            st = dev.status()
        assert st['stream']['viewers'] <= 2 and st['camera']['viewers'] <= 2, st['stream']
        assert st['stream']['refused'] == 6, st['stream']
    finally:
        for s in socks:
            s.close()


def test_disconnects_leak_nothing(firmware):
    dev = firmware({'camera': {'framesize': 'QVGA'}, 'http': {'max_viewers': 32}})
    r = MjpegReader(dev.ports['stream'])
    r.frame()
    r.close()
    time.sleep(0.5)
    base = fd_count(dev.board.pid)
    for i in range(20):
        r = MjpegReader(dev.ports['stream'])
        r.frame()
        if i % 2:
            r.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        r.close()
    # a viewer that connects and leaves before its first frame
    for _ in range(5):
        s = socket.create_connection(('127.0.0.1', dev.ports['stream']))
        s.sendall(b'GET /stream HTTP/1.1\r\n\r\n')
        s.close()
    deadline = time.time() + 15
    while time.time() < deadline and dev.status()['stream']['viewers']:
        time.sleep(0.2)
    assert dev.status()['stream']['viewers'] == 0
    assert dev.status()['camera']['viewers'] == 0
    deadline = time.time() + 10
    while time.time() < deadline and fd_count(dev.board.pid) > base:
        time.sleep(0.1)       # the last status request's socket closes just after its answer
    assert fd_count(dev.board.pid) <= base, 'sockets leaked'


def test_burst_of_eight_viewers_all_served_promptly(firmware):
    """A burst of 8 connects must not lose SYNs to a backlog of 5 (a lost SYN costs 1 s)."""
    dev = firmware({'camera': {'framesize': 'QVGA'}})
    port = dev.ports['stream']
    MjpegReader(port).close()
    firsts = first_frames(port, 8)
    assert max(firsts) < 0.9, firsts   # no viewer waited for a SYN retransmission


def test_admin_requires_auth(firmware):
    dev = firmware()
    assert dev.get('admin', '/')[0] == 401
    assert dev.get('admin', '/status')[0] == 401
    assert dev.get('admin', '/status', auth=('admin', 'wrong-password'))[0] == 401
    code, h, _ = dev.get('admin', '/action/arm', data=b'')
    assert code == 401 and 'Basic' in h['WWW-Authenticate']
    code, _, body = dev.get('admin', '/', auth=('admin', 'test-admin-pw'))
    assert code == 200 and b'admin' in body
    st = dev.status()
    assert st['camera']['state'] == 'on' and 'heap_free' in st and 'uptime_s' in st
    assert 'test-admin-pw' not in json.dumps(st)
    # cross-origin POST refused even with credentials
    code, _, _ = dev.get('admin', '/action/arm', auth=('admin', 'test-admin-pw'), data=b'',
                         headers={'Origin': 'http://evil.example'})
    assert code == 403
    assert dev.status()['alarm']['state'] == 'disarmed'


def test_admin_without_password_is_off(firmware):
    dev = firmware({'admin': {'password': ''}})
    code, _, body = dev.get('admin', '/status', auth=('admin', ''))
    assert code == 403 and b'admin.password' in body
    assert dev.wait_console('admin server disabled')


def test_admin_actions(firmware):
    dev = firmware()
    code, _, body = dev.admin('arm')
    assert code == 200 and json.loads(body)['ok']
    assert dev.status()['alarm']['state'] == 'armed'
    assert dev.admin('disarm')[0] == 200
    assert dev.status()['alarm']['state'] == 'disarmed'
    code, _, body = dev.admin('sleep', seconds='abc')
    assert code == 400 and b'seconds' in body
    assert dev.admin('nosuch')[0] == 404
    assert dev.admin('camera_off')[0] == 200
    deadline = time.time() + 5
    while dev.status()['camera']['state'] != 'off' and time.time() < deadline:
        time.sleep(0.1)
    assert dev.status()['camera']['state'] == 'off'
    code, _, body = dev.get('control', '/capture')
    assert code == 503 and b'off' in body
    assert dev.get('stream', '/stream')[0] == 503
    assert dev.admin('camera_on')[0] == 200
    code, _, body = dev.get('control', '/capture')
    assert code == 200 and body[:2] == b'\xff\xd8'


def test_reboot_restarts_the_board(firmware):
    dev = firmware()
    assert dev.admin('reboot')[0] == 200
    assert dev.board.wait_boots(2, timeout=15), dev.console()[-2000:]
    assert dev.board.wait_ready(list(dev.ports.values()), timeout=20)
    assert dev.board.exit_codes[0] == 20          # machine.reset()
    assert dev.get('control', '/status')[0] == 200


def test_failing_camera_recovers(firmware):
    dev = firmware({'camera': {'framesize': 'QVGA'}})
    r = MjpegReader(dev.ports['stream'])
    r.frame()
    inits = dev.stats()['inits']
    dev.board.control('camera', fail_capture=7)
    got = 0
    deadline = time.time() + 30
    while got < 10 and time.time() < deadline:
        _, jpeg = r.frame()
        got += 1
    r.close()
    assert got == 10
    st = dev.status()['camera']
    assert st['state'] == 'on' and st['failed'] >= 7 and st['restarts'] >= 1
    assert dev.stats()['inits'] > inits                       # deinit/init happened
    assert dev.board.read('camera')['fail_capture'] == 0


def test_camera_init_failure_is_retried(firmware):
    dev = firmware(camera={'fail_init': 2})
    deadline = time.time() + 30
    code = 0
    while time.time() < deadline:
        code, _, body = dev.get('control', '/capture', timeout=10)
        if code == 200:
            break
        time.sleep(0.5)
    assert code == 200
    assert dev.wait_console('init failed')


def test_bad_config_is_refused_naming_the_key(firmware):
    dev = firmware({'camera': {'quality': 5, 'qualty': 3}}, ready=False, once=True)
    assert dev.board.wait_exit(20)
    out = dev.console()
    assert 'camera.quality' in out and '10..63' in out and 'camera.qualty' in out
    # main.py returns (the board waits at its REPL): a SystemExit would be a soft reset, a loop
    assert 'config refused' in out and dev.board.last_exit_code == 0 and dev.board.boots == 1
