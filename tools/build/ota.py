"""Update a board over the air: build a bundle, send it to the admin server, report the version
that runs afterwards.

    python tools/build/ota.py --host 192.168.4.1[:8080] [--config config.json]
                              [--build build/esp32 --march xtensawin] [--bundle FILE]

The admin login and the update key come from the config given (the board's config.json). The
board installs the bundle in a spare slot, restarts into it, and keeps it only if it reports
healthy within update.confirm_s; this tool waits for that verdict and prints it.
"""
import argparse
import base64
import http.client
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bundle as bundler  # noqa: E402  (tools/build/bundle.py, run as a script)


def auth_header(user, password):
    return 'Basic ' + base64.b64encode(('%s:%s' % (user, password)).encode()).decode()


def push(host, port, auth, data, out=sys.stdout, timeout=60):
    """POST the bundle with progress; (status, body text)."""
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    c.putrequest('POST', '/update')
    c.putheader('Authorization', auth)
    c.putheader('Content-Type', 'application/octet-stream')
    c.putheader('Content-Length', str(len(data)))
    c.endheaders()
    step = 8192
    try:
        for off in range(0, len(data), step):
            c.send(data[off:off + step])
            done = min(off + step, len(data))
            out.write('\rota: sent %3d%% (%d of %d KB)' % (100 * done // len(data), done // 1024,
                                                          len(data) // 1024))
            out.flush()
    except OSError as e:   # the board refused early and closed: its answer says why
        out.write('\nota: connection closed while sending (%s)' % e)
    out.write('\n')
    r = c.getresponse()
    body = r.read().decode('utf-8', 'replace')
    c.close()
    return r.status, body


def status(host, port, auth, timeout=3):
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request('GET', '/status', headers={'Authorization': auth})
        r = c.getresponse()
        return json.loads(r.read()) if r.status == 200 else None
    except (OSError, ValueError):
        return None
    finally:
        c.close()


def wait_verdict(host, port, auth, version, before, t_before, wait_s, out=sys.stdout):
    """Poll /status until the new version is confirmed or rolled back (or wait_s passes)."""
    end = time.time() + wait_s
    seen = None
    while time.time() < end:
        s = status(host, port, auth)
        # restarted since the push: it runs the new version, or its uptime is shorter than the
        # old firmware's would be (whole seconds on a board: a quick restart can hide in them)
        new = s and s.get('version') == version != before.get('version')
        if s and (new or s.get('uptime_s', 1e9) < before.get('uptime_s', 0) + time.time() - t_before - 2):
            u = s.get('update', {})
            if seen != s.get('version'):
                seen = s.get('version')
                out.write('ota: the board runs version %s\n' % seen)
            if seen == version and not u.get('trial'):
                out.write('ota: version %s reports healthy: update confirmed\n' % version)
                return 0
            if u.get('rolled_back') and seen != version:
                out.write('ota: version %s was rolled back: the board runs %s again\n'
                          % (version, seen))
                return 1
        out.flush()
        time.sleep(1)
    out.write('ota: no verdict after %d s (last seen version %s)\n' % (wait_s, seen))
    return 2


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--host', required=True, help='host[:port] of the admin server (8080)')
    ap.add_argument('--config', default='config.json')
    ap.add_argument('--build', default='build/esp32')
    ap.add_argument('--march', default='xtensawin')
    ap.add_argument('--bundle', help='send this bundle instead of building one')
    ap.add_argument('--version', help='version written into the bundle (default firmware/version.py)')
    ap.add_argument('--wait', type=float, default=300, help='seconds to wait for the verdict')
    a = ap.parse_args(argv)
    host, _, port = a.host.partition(':')
    port = int(port or 8080)
    with open(a.config) as f:
        cfg = json.load(f)
    adm = cfg.get('admin', {})
    auth = auth_header(adm.get('user', 'admin'), adm.get('password', ''))
    if a.bundle:
        with open(a.bundle, 'rb') as f:
            data = f.read()
        version = json.loads(data[data.index(b'\n') + 1:][:int(data[6:data.index(b'\n')])])['version']
    else:
        version = a.version or bundler.source_version()
        data = bundler.make(os.path.join(bundler.ROOT, a.build), bundler.config_key(a.config),
                            a.march, version)
    t_before = time.time()
    before = status(host, port, auth)
    if before is None:
        print('ota: no admin server answering at %s:%d (or the login is wrong)' % (host, port))
        return 2
    print('ota: %s runs version %s; sending %s (%d KB)' % (a.host, before.get('version'),
                                                          version, len(data) // 1024))
    t0 = time.time()
    code, body = push(host, port, auth, data)
    print('ota: board answered %d after %.1f s: %s' % (code, time.time() - t0, body.strip()))
    if code != 200:
        return 1
    return wait_verdict(host, port, auth, version, before, t_before, a.wait)


if __name__ == '__main__':
    sys.exit(main())
