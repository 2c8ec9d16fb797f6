"""alarm.pir: a PIR on GPIO 13 as a second opinion, on the whole firmware with the simulated board
(the simulator's pins.json drives the input: {"13": 1} = the PIR fires). Every wait polls."""
import pytest
from testkit.peers import alarm, frames_after, wait

pytestmark = pytest.mark.timeout(60)


def test_or_alarms_on_the_pir_alone(firmware):
    dev = firmware({'alarm': {'pir': 'or', 'event_gap_s': 1}})
    assert dev.admin('arm')[0] == 200
    a = frames_after(dev, 5)                       # still scene, PIR quiet: nothing
    assert a['alarms'] == 0, a
    dev.board.control('pins', **{'13': 1})
    wait(lambda: alarm(dev)['alarms'], 10, 'an alarm from the PIR')
    assert alarm(dev)['events'][-1]['reason'] == 'pir'


def test_and_needs_the_pir_to_agree_with_the_camera(firmware):
    dev = firmware({'alarm': {'pir': 'and', 'event_gap_s': 1}})
    assert dev.admin('arm')[0] == 200
    frames_after(dev, 4)
    dev.board.control('camera', motion=True)       # the camera sees motion, the PIR does not
    a = frames_after(dev, 15)
    assert a['alarms'] == 0, a
    dev.board.control('pins', **{'13': 1})         # now both
    wait(lambda: alarm(dev)['alarms'], 10, 'an alarm from camera and PIR')
    assert alarm(dev)['events'][-1]['reason'] == 'motion+pir'
