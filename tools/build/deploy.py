"""Copy the built firmware, its libraries and config.json to a board with mpremote.

Three short steps, so that the firmware's hardware watchdog (30 s, it survives mpremote's
interrupt and soft reset) cannot cut a copy:
1. read the board's MicroPython version (`sys.implementation`) and refuse a build for another
   version (the native modules would not load: tools/build/versions.py), resetting the board
   back into its firmware (mpremote interrupted it);
2. write the flag file `maintenance` and reset the board: main.py then starts no watchdog and no
   servers and hands the board to the REPL (the reset stops a running watchdog);
3. ONE mpremote session: remove the old firmware/ and lib/ (files of an older layout go with
   them; config and state files stay) and what an update over the air left (slots/, ota.json),
   copy the build and config.json, remove the flag, reset.
If step 3 is cut (cable, power), the flag stays: the board boots to maintenance again and
`make deploy` can simply be rerun.

`--dry-run` prints the mpremote commands instead of running them (what `make deploy DRY_RUN=1`
shows). config.json is the one next to the Makefile: copy config.example.json and edit it first
(`--config FILE`: another one; the simulator's tests pass the board's own).
"""
import argparse
import os
import subprocess
import sys

import versions

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# MPREMOTE: another mpremote (the tests put a stand-in there)
MPREMOTE = os.environ.get('MPREMOTE') or os.path.join(os.path.dirname(sys.executable), 'mpremote')
FLAG = 'maintenance'
# What may be left of an older firmware on the board: code only, never config or state files,
# and what an update over the air left (its slots and ota.json): the version copied by cable is
# the one that runs next.
CODE_DIRS = ('firmware', 'lib', 'slots', 'ota.json')
# Runs on the board: remove the code folders whole (a missing one is fine: a fresh board).
_REMOVE = ("import os\n"
           "def rm(p):\n"
           " try:\n"
           "  if os.stat(p)[0] & 0x4000:\n"
           "   for n in os.listdir(p): rm(p + '/' + n)\n"
           "   os.rmdir(p)\n"
           "  else: os.remove(p)\n"
           " except OSError: pass\n"
           "for p in %r: rm(p)\n"
           "print('deploy: removed old', ', '.join(%r))" % (CODE_DIRS, CODE_DIRS))


def version_command(port):
    return ['mpremote', 'connect', port, 'exec', 'import sys; print(sys.implementation)']


def maintenance_command(port):
    return ['mpremote', 'connect', port, 'fs', 'touch', ':' + FLAG, '+', 'reset']


def copy_command(port, build='build/esp32', config='config.json'):
    """The one session that replaces the firmware on a board in maintenance."""
    cmd = ['mpremote', 'connect', port, 'exec', _REMOVE,
           '+', 'fs', 'cp', '-r', build + '/firmware', ':',
           '+', 'fs', 'cp', '-r', build + '/lib', ':',
           '+', 'fs', 'cp', build + '/boot.py', ':boot.py',
           '+', 'fs', 'cp', build + '/main.py', ':main.py']
    if config:
        cmd += ['+', 'fs', 'cp', config, ':config.json']
    return cmd + ['+', 'fs', 'rm', ':' + FLAG, '+', 'reset']


def commands(port, build='build/esp32', config='config.json'):
    return [maintenance_command(port), copy_command(port, build, config)]


def check_version(board_text, built):
    """None when a build for MicroPython `built` runs on the board that printed `board_text`
    (its sys.implementation), else the reason, saying what to do."""
    try:
        board = versions.parse_implementation(board_text)
    except ValueError as e:
        return 'cannot read the board\'s MicroPython version: %s' % e
    if board == built:
        return None
    if board in versions.VERSIONS:
        return ('the board runs MicroPython %s but the build is for %s: '
                'run `make deploy MICROPYTHON=%s`' % (board, built, board))
    return ('the board runs MicroPython %s, which this firmware does not support (supported: %s): '
            'flash one of those images first (README, "Boards and images")'
            % (board, ', '.join(sorted(versions.VERSIONS))))


def built_version(build):
    try:
        with open(os.path.join(ROOT, build, 'micropython.txt')) as f:
            return f.read().strip()
    except OSError:
        sys.exit('deploy: %s has no micropython.txt: run make build first' % build)


def run(cmd, capture=False):
    r = subprocess.run([MPREMOTE] + cmd[1:], cwd=ROOT, capture_output=capture, text=True)
    if r.returncode:
        sys.exit('deploy: mpremote %s failed (exit %d)%s'
                 % (cmd[3], r.returncode, (':\n' + r.stdout + r.stderr) if capture else ''))
    return r.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--port', default='/dev/ttyUSB0')
    ap.add_argument('--build', default='build/esp32')
    ap.add_argument('--config', default='config.json', help='the config.json to copy')
    ap.add_argument('--dry-run', action='store_true')
    a = ap.parse_args()
    config = a.config
    if not os.path.exists(os.path.join(ROOT, config)):
        print('note: no config.json here; copy config.example.json to config.json and edit it '
              '(the board keeps its current config.json)', file=sys.stderr)
        config = None
    built = built_version(a.build)
    cmd = version_command(a.port)
    print(' '.join(cmd[:4]), repr(cmd[4]))
    if a.dry_run:
        print('# the board must run MicroPython %s' % built)
    else:
        why = check_version(run(cmd, capture=True), built)
        if why:
            # asking interrupted the firmware: start it again (without a watchdog the board
            # would sit at the REPL)
            run(['mpremote', 'connect', a.port, 'reset'])
            sys.exit('deploy refused: ' + why)
        print('deploy: the board runs MicroPython %s, as the build' % built)
    for cmd in commands(a.port, a.build, config):
        print(' '.join(c if c != _REMOVE else '<remove %s>' % ' '.join(CODE_DIRS) for c in cmd))
        if not a.dry_run:
            run(cmd)


if __name__ == '__main__':
    main()
