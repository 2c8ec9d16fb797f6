"""Supervisor, watchdog and reset reporting on the MicroPython VM with the simulated board.

Each scenario runs tools/testkit/vm/recovery_driver.py under tools/sim/simulate.py's Board, which restarts
the VM after machine.reset(), deep sleep or a watchdog timeout with the matching reset cause,
exactly as it restarts the firmware; the driver's second boot reports what it sees.
"""
import json
import os
import sys

import pytest
from sim.simulate import Board  # noqa: E402
from testkit.paths import ROOT

DRIVER = os.path.join(ROOT, 'tools', 'testkit', 'vm', 'recovery_driver.py')
WDT_EXIT, RESET_EXIT, SLEEP_EXIT = 22, 20, 21
PWRON, HARD, WDT, DEEPSLEEP = 1, 2, 3, 4


def run(tmp_path, *args, timeout=60):
    board = Board(str(tmp_path / 'flash'), argv=[DRIVER] + [str(a) for a in args],
                  max_sleep=2)
    os.makedirs(board.flash, exist_ok=True)
    board.start()
    try:
        assert board.wait_exit(timeout), 'board still running'
    finally:
        board.stop()
    console = board.console()
    results = [json.loads(line[7:]) for line in console.splitlines() if line.startswith('RESULT ')]
    return board, console, results


def test_task_raising_is_restarted_with_its_traceback_kept(tmp_path):
    board, console, res = run(tmp_path, 'crash')
    assert board.exit_codes == [0], console
    r = res[-1]
    assert r['runs'] == 3
    flaky = r['status']['flaky']
    assert flaky['restarts'] == 2 and flaky['running'] and 'boom 2' in flaky['error']
    assert r['status']['oneshot'] == {'restarts': 0, 'error': None, 'critical': False,
                                      'running': False}
    traces = r['report']['tracebacks']
    assert [t['task'] for t in traces] == ['flaky', 'flaky']
    assert 'Traceback' in traces[0]['trace'] and 'boom 1' in traces[0]['trace']
    assert 'restart in 1 s' in console and 'restart in 2 s' in console
    # a secret in an exception text is masked in the log, the status and the traceback
    assert 's3cr3t-token' not in console


def test_hung_task_is_reset_by_the_watchdog_and_the_next_boot_says_which(tmp_path):
    board, console, res = run(tmp_path, 'hang', 2)
    assert board.exit_codes == [WDT_EXIT, 0], console
    assert board.causes == [PWRON, WDT]
    assert 'task cam shows no progress' in console
    assert 'STILL ALIVE' not in console
    assert res[-1]['reset_cause'] == 'watchdog'
    assert res[-1]['reset_note'].startswith('task cam stalled')
    assert 'W boot: reset cause watchdog (task cam stalled' in console


def test_loop_that_never_yields_is_reset_by_the_watchdog(tmp_path):
    board, console, res = run(tmp_path, 'spin', 2)
    assert board.exit_codes == [WDT_EXIT, 0], console
    assert 'SPINNING' in console and 'STILL ALIVE' not in console
    assert res[-1] == {'reset_cause': 'watchdog', 'reset_note': None, 'going_down': None}


def test_beating_critical_tasks_keep_the_board_up(tmp_path):
    board, console, res = run(tmp_path, 'healthy', 1, 4)
    assert board.exit_codes == [0], console
    r = res[-1]
    assert r['report']['watchdog'] == {'timeout_s': 1, 'on': True, 'stalled': None}
    assert set(r['status']) == {'a', 'b'} and all(t['critical'] for t in r['status'].values())


def test_reboot_runs_shutdown_hooks_and_reports_itself(tmp_path):
    board, console, res = run(tmp_path, 'reboot')
    assert board.exit_codes == [RESET_EXIT, 0], console
    assert board.causes == [PWRON, HARD]
    assert 'HOOK ok ran' in console
    assert 'shutdown hook bad failed' in console and 'shutdown hook stuck timed out' in console
    assert res[-1] == {'reset_cause': 'hard reset', 'reset_note': 'test reboot',
                       'going_down': None}


def test_deep_sleep_runs_hooks_and_wakes_with_its_reason(tmp_path):
    board, console, res = run(tmp_path, 'deepsleep', 1)
    assert board.exit_codes == [SLEEP_EXIT, 0], console
    assert board.causes == [PWRON, DEEPSLEEP]
    assert 'sim: machine.deepsleep(1000)' in console and 'HOOK ok ran' in console
    assert res[-1]['reset_cause'] == 'deep sleep wake'
    assert res[-1]['reset_note'] == 'test sleep, 1 s'


def test_power_cycle_reports_power_on_and_ignores_a_stale_note(tmp_path):
    """A note left by a reboot that never happened (power lost first) is not reported."""
    flash = tmp_path / 'flash'
    flash.mkdir()
    (flash / 'reset_note.json').write_text('{"kind": "reboot", "why": "stale"}')
    board, console, res = run(tmp_path, 'boot')
    assert res[-1] == {'reset_cause': 'power-on', 'reset_note': None, 'going_down': None}
    assert not (flash / 'reset_note.json').exists()


@pytest.mark.parametrize('text', ['{"kind": "reboot"', '[1, 2]', ''])
def test_a_corrupt_note_never_stops_the_boot(tmp_path, text):
    flash = tmp_path / 'flash'
    flash.mkdir()
    (flash / 'reset_note.json').write_text(text)
    board, console, res = run(tmp_path, 'boot')
    assert board.exit_codes == [0], console
    assert res[-1]['reset_cause'] == 'power-on'
