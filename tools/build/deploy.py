"""Copy the built firmware, its libraries and config.json to a board with mpremote.

`--dry-run` prints the mpremote commands instead of running them (what `make deploy DRY_RUN=1`
shows). config.json is the one next to the Makefile: copy config.example.json and edit it first.
"""
import argparse
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MPREMOTE = os.path.join(os.path.dirname(sys.executable), 'mpremote')


def commands(port, build='build/esp32', config='config.json'):
    c = ['mpremote', 'connect', port]
    cmds = [
        c + ['fs', 'cp', '-r', build + '/firmware', ':'],
        c + ['fs', 'cp', '-r', build + '/lib', ':'],
        c + ['fs', 'cp', build + '/boot.py', ':boot.py'],
        c + ['fs', 'cp', build + '/main.py', ':main.py'],
    ]
    if config:
        cmds.append(c + ['fs', 'cp', config, ':config.json'])
    # the version copied by cable runs next, not a slot an update over the air left active
    cmds.append(c + ['exec', "import os; 'ota.json' in os.listdir() and os.remove('ota.json')"])
    cmds.append(c + ['reset'])
    return cmds


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--port', default='/dev/ttyUSB0')
    ap.add_argument('--build', default='build/esp32')
    ap.add_argument('--dry-run', action='store_true')
    a = ap.parse_args()
    config = 'config.json'
    if not os.path.exists(os.path.join(ROOT, config)):
        print('note: no config.json here; copy config.example.json to config.json and edit it '
              '(the board keeps its current config.json)', file=sys.stderr)
        config = None
    for cmd in commands(a.port, a.build, config):
        print(' '.join(cmd))
        if not a.dry_run:
            cmd[0] = MPREMOTE
            r = subprocess.run(cmd, cwd=ROOT)
            if r.returncode:
                sys.exit('deploy: %s failed (exit %d)' % (' '.join(cmd[3:]), r.returncode))


if __name__ == '__main__':
    main()
