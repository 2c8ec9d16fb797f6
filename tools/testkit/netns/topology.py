"""A home network in three network namespaces: camera -- router (miniupnpd) -- isp.

    camera  192.0.2.10/24  --veth--  192.0.2.1/24 (lan0)   router   (wan0) 198.51.100.2/24
                                                                      --veth--  198.51.100.1/24  isp

Only documentation addresses; the namespaces have no link to the host's network, so nothing
leaves them. `Topology.create()` raises Unavailable (with the reason) where namespaces cannot be
made (not root, no CAP_NET_ADMIN, no `ip`); the tests turn that into a skip, or a failure in CI.
"""
import os
import shutil
import subprocess

LAN_NET, ROUTER_LAN, CAMERA = '192.0.2.0/24', '192.0.2.1', '192.0.2.10'
ROUTER_WAN, ISP = '198.51.100.2', '198.51.100.1'


class Unavailable(Exception):
    pass


def _run(*cmd, check=True):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    if check and r.returncode:
        raise subprocess.CalledProcessError(r.returncode, cmd, r.stdout, r.stderr)
    return r


class Topology:
    def __init__(self, tag=None):
        tag = tag or str(os.getpid())
        self.router, self.camera, self.isp = 'upr%s' % tag, 'upc%s' % tag, 'upi%s' % tag
        self.made = []

    def ns(self, name):
        """Command prefix that runs a program inside namespace `name`."""
        return ['ip', 'netns', 'exec', name]

    def run(self, name, *cmd, check=True):
        return _run(*(self.ns(name) + list(cmd)), check=check)

    def create(self):
        if not shutil.which('ip'):
            raise Unavailable('the `ip` command is missing (Debian package iproute2)')
        r = _run('ip', 'netns', 'add', self.router, check=False)
        if r.returncode:
            raise Unavailable('cannot create a network namespace (needs root / CAP_SYS_ADMIN): '
                              + r.stderr.strip())
        self.made.append(self.router)
        try:
            for n in (self.camera, self.isp):
                _run('ip', 'netns', 'add', n)
                self.made.append(n)
            for n in self.made:
                self.run(n, 'ip', 'link', 'set', 'lo', 'up')
            # veth pairs made inside the router namespace, one end moved out: no host link.
            self.run(self.router, 'ip', 'link', 'add', 'lan0', 'type', 'veth', 'peer', 'name', 'eth0')
            self.run(self.router, 'ip', 'link', 'set', 'eth0', 'netns', self.camera)
            self.run(self.router, 'ip', 'link', 'add', 'wan0', 'type', 'veth', 'peer', 'name', 'eth0')
            self.run(self.router, 'ip', 'link', 'set', 'eth0', 'netns', self.isp)
            self._addr(self.router, 'lan0', ROUTER_LAN)
            self._addr(self.router, 'wan0', ROUTER_WAN)
            self._addr(self.camera, 'eth0', CAMERA)
            self._addr(self.isp, 'eth0', ISP)
            self.run(self.camera, 'ip', 'route', 'add', 'default', 'via', ROUTER_LAN)
            self.run(self.router, 'ip', 'route', 'add', 'default', 'via', ISP)
            self.run(self.router, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1')
        except (subprocess.CalledProcessError, OSError) as e:
            self.destroy()
            raise Unavailable('cannot set up the namespaces: %s %s' % (
                e, getattr(e, 'stderr', '') or ''))
        return self

    def _addr(self, ns, dev, ip):
        self.run(ns, 'ip', 'addr', 'add', ip + '/24', 'dev', dev)
        self.run(ns, 'ip', 'link', 'set', dev, 'up')

    def destroy(self):
        for n in reversed(self.made):
            _run('ip', 'netns', 'del', n, check=False)
        self.made = []


MINIUPNPD_CONF = """\
ext_ifname=wan0
listening_ip=lan0
http_port={port}
enable_natpmp=no
enable_upnp=yes
secure_mode=yes
system_uptime=yes
notify_interval=60
clean_ruleset_interval=600
uuid=3d3cec3a-8cf0-11e0-98ee-001a6b0fdf3c
friendly_name=netns test router
upnp_table_name=miniupnpd_test
upnp_nat_table_name=miniupnpd_test
allow 1024-65535 {lan} 1-65535
deny 0-65535 0.0.0.0/0 0-65535
"""


def miniupnpd_conf(path, port=5000):
    with open(path, 'w') as f:
        f.write(MINIUPNPD_CONF.format(port=port, lan=LAN_NET))
    return path
