"""The owner's word over auto-arm (issue 12 item 4): the whole firmware on the VM, management
lost (nothing answers at the server's port), the Internet up. Waits poll and are bounded."""
import socket

import pytest
from testkit.peers import closed_port, peers, wait  # noqa: F401  (peers is a fixture)

pytestmark = pytest.mark.timeout(90)


def alarm(dev):
    return dev.status()['alarm']


def state_is(dev, state):
    return lambda: (lambda a: a if a['state'] == state else None)(alarm(dev))


def lost(firmware, peers, **alarm_cfg):
    net = peers.internet()
    return firmware(peers.config(servers=[closed_port(socket.SOCK_DGRAM)], probe=[net.port],
                                 lfcp={'unreachable_after_s': 2},
                                 alarm=dict({'auto_arm_after_s': 1}, **alarm_cfg)))


def test_owner_disarm_holds_against_auto_arm_until_the_owner_arms(firmware, peers):
    dev = lost(firmware, peers)
    wait(state_is(dev, 'auto-armed'), 20, 'auto-arm')
    assert dev.admin('disarm')[0] == 200
    # the moment auto-arm would strike again it says why it does not
    assert dev.wait_console('alarm: owner disarmed: not auto-arming', 15)
    a = alarm(dev)
    assert a['state'] == 'disarmed' and 'until armed again' in a['owner_hold'], a
    assert dev.admin('arm')[0] == 200  # the owner's arm ends the hold
    a = alarm(dev)
    assert a['state'] == 'armed' and 'owner_hold' not in a, a


def test_rearm_after_lets_auto_arm_return_after_that_much_lost_management(firmware, peers):
    dev = lost(firmware, peers, rearm_after_s=3)
    wait(state_is(dev, 'auto-armed'), 20, 'auto-arm')
    assert dev.admin('disarm')[0] == 200
    a = alarm(dev)
    assert a['state'] == 'disarmed' and 'management lost for 3 s' in a['owner_hold'], a
    assert dev.wait_console('alarm: owner disarmed: not auto-arming', 15)
    wait(state_is(dev, 'auto-armed'), 20, 'auto-arm after rearm_after_s')
    assert dev.wait_console('auto-arm allowed again', 5)
