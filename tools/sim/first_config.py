"""Make the simulator's config.json once, with random passwords, and say how to log in.

The simulated "Internet" is the board's own control port on loopback: the simulator never sends
anything off this machine, and auto-arm still sees an Internet that answers.

The firmware has no default password; the simulator's flash gets a fresh one so that the admin
server works out of the box and nobody's copy shares a password with anybody else's.
"""
import json
import os
import secrets
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(flash):
    path = os.path.join(flash, 'config.json')
    if not os.path.exists(path):
        with open(os.path.join(ROOT, 'tools', 'sim', 'board', 'config.sim.json')) as f:
            cfg = json.load(f)
        cfg.setdefault('admin', {})['password'] = secrets.token_urlsafe(9)
        cfg.setdefault('wifi', {})['ap_password'] = secrets.token_urlsafe(9)
        os.makedirs(flash, exist_ok=True)
        with open(path, 'w') as f:
            json.dump(cfg, f, indent=2)
    with open(path) as f:
        cfg = json.load(f)
    admin = cfg.get('admin', {})
    print('sim: flash %s; admin login: %s / %s (edit %s to change)' % (
        flash, admin.get('user', 'admin'), admin.get('password') or '(none: admin off)', path))


if __name__ == '__main__':
    main(sys.argv[1] if len(sys.argv) > 1 else 'sim/flash')
