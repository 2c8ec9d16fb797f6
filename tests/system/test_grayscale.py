"""A camera configured for GRAYSCALE frames feeds the same detector; it has no JPEG to show."""
import time


def test_grayscale_camera_detects_motion_and_refuses_jpeg_endpoints(firmware):
    dev = firmware({'camera': {'format': 'GRAYSCALE', 'framesize': 'QVGA'},
                    'alarm': {'event_gap_s': 1, 'detect_fps': 10}})
    code, _, body = dev.get('control', '/capture')
    assert code == 503 and b'GRAYSCALE' in body
    code, _, body = dev.get('stream', '/stream')
    assert code == 503 and b'GRAYSCALE' in body
    assert dev.admin('arm')[0] == 200
    deadline = time.time() + 15
    while time.time() < deadline and dev.status()['alarm']['frames_checked'] < 10:
        time.sleep(0.2)
    st = dev.status()
    assert st['alarm']['frames_checked'] >= 10 and st['alarm']['alarms'] == 0   # still scene: quiet
    assert st['camera']['format'] == 'GRAYSCALE'
    dev.board.control('camera', motion=True)
    deadline = time.time() + 20
    while time.time() < deadline and dev.status()['alarm']['alarms'] == 0:
        time.sleep(0.2)
    st = dev.status()['alarm']
    assert st['alarms'] >= 1 and st['events'][-1]['reason'] == 'motion', st
    assert 'last_frame_error' not in st
