"""Both camera driver families behind CameraService: the firmware picks the adapter by what the
`camera` module offers (tools/sim/board/camera.py: micropython-camera-driver's functions;
tools/sim/board_class/camera.py: micropython-camera-API's Camera class, SIM_CAMERA=class).
`make test-class` runs the foundation and alarm suites on the class family too."""
import io
import json
import time

import pytest
from PIL import Image


@pytest.mark.parametrize('family', ['functions', 'class'])
def test_the_firmware_drives_either_family(firmware, family):
    dev = firmware({'camera': {'framesize': 'QVGA', 'quality': 20}},
                   env={'SIM_CAMERA': 'class' if family == 'class' else ''})
    assert dev.status()['camera']['driver'] == family
    code, _, body = dev.get('control', '/capture')
    assert code == 200 and Image.open(io.BytesIO(body)).size == (320, 240)
    # a new frame size reaches the sensor through either API
    assert dev.get('control', '/control?var=framesize&val=8')[0] == 200     # VGA
    code, _, body = dev.get('control', '/capture')
    assert Image.open(io.BytesIO(body)).size == (640, 480)
    status = json.loads(dev.get('control', '/status')[2])
    assert status['framesize'] == 8 and status['quality'] == 20


def test_class_family_leaves_out_what_the_ov2640_refuses(firmware):
    """micropython-camera-API raises ValueError for sharpness on an OV2640: the firmware logs it,
    refuses the control with a 501 and leaves it out of /status instead of echoing it."""
    dev = firmware(env={'SIM_CAMERA': 'class'})
    assert dev.wait_console('camera: sharpness refused by the sensor')
    assert 'sharpness' not in json.loads(dev.get('control', '/status')[2])
    code, _, body = dev.get('control', '/control?var=sharpness&val=1')
    assert code == 501 and b'sharpness cannot be set' in body


def test_class_family_capture_failures_are_retried(firmware):
    """capture() returning None (the class API's failure) counts as a failed capture and the
    stream goes on, as with the function API's False."""
    dev = firmware({'camera': {'framesize': 'QVGA'}}, env={'SIM_CAMERA': 'class'})
    dev.board.control('camera', fail_capture=2)
    # the simulator reads its control files between captures (at most every 100 ms), not at
    # once: snapshots until the failures show, bounded in time, not in count (CI's load)
    end = time.monotonic() + 15
    while time.monotonic() < end and not dev.status()['camera']['failed']:
        code, _, body = dev.get('control', '/capture')
        assert code == 200 and body[:2] == b'\xff\xd8'
    assert dev.status()['camera']['failed'] >= 1
