"""The device's peers for end-to-end tests of the whole firmware: management servers, the fake
Telegram Bot API, an Internet probe target. Everything listens on 127.0.0.1.

    peers = Peers(tmp_path)                  # or the `peers` fixture (import it into a test file)
    srv = peers.lfcp()                       # a reference LFCP server (tools/peers/lfcp_server.py)
    tg = peers.telegram()                    # the fake Bot API over HTTPS with a test CA
    net = peers.internet()                   # a TCP listener that plays "the Internet"
    dev = firmware(peers.config(servers=[srv], telegram=tg, probe=[net.port]))
    peers.moal(srv, 'testcam'); peers.logs(srv, 'testcam'); tg.photos

Waits poll with a bound and never assume a timing margin.
"""
import os
import socket
import sys
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

from peers import fake_telegram  # noqa: E402

from testkit.helpers import free_port  # noqa: E402
from testkit.vm.lfcp_harness import KEY, Servers  # noqa: E402

TOKEN = '123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw'
CHAT = 42


def wait(pred, timeout=10.0, what='condition', every=0.1):
    """pred()'s first true value within `timeout` seconds, else AssertionError naming `what`."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= end:
            raise AssertionError('timed out after %.0f s waiting for %s' % (timeout, what))
        time.sleep(every)



def alarm(dev):
    """The firmware's alarm status."""
    return dev.status()['alarm']


def frames_after(dev, n, timeout=20):
    """Wait until the detector has checked n more frames; return the alarm status then."""
    start = alarm(dev)['frames_checked']
    return wait(lambda: (lambda a: a if a['frames_checked'] >= start + n else None)(alarm(dev)),
                timeout, '%d more frames checked' % n)

def closed_port(kind=socket.SOCK_STREAM):
    """A loopback port nobody listens on (right now)."""
    return free_port(kind)


class ProbeTarget:
    """A TCP listener standing in for the probe's Internet hosts; counts the connections."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while self.running:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            c.close()

    def stop(self):
        self.running = False
        self.thread.join(2)
        self.sock.close()


class Peers:
    def __init__(self, tmp_path):
        self.dir = str(tmp_path)
        self._servers = None
        self._stops = []

    # --- LFCP management ------------------------------------------------------------------
    def lfcp(self, port=0, key=KEY, **kw):
        """A reference LFCP server on 127.0.0.1 (port 0: any free one); .port is its UDP port."""
        if self._servers is None:
            self._servers = Servers()
            self._stops.append(self._servers.close)
        return self._servers.start(key=key, port=port, **kw)

    def _device(self, srv, name, what):
        def get():
            d = srv.devices.get(name)
            return list(getattr(d, what)) if d else []
        return self._servers.call(get)

    def moal(self, srv, name):
        """Alarms (MOAL) the server recorded from device `name`: dicts time, text, id."""
        return self._device(srv, name, 'alarms')

    def logs(self, srv, name):
        """LOG texts the server recorded from device `name`."""
        return [x['text'] for x in self._device(srv, name, 'logs')]

    def reachable(self, srv, name):
        return self._servers.call(lambda: bool(srv.devices.get(name) and
                                               srv.devices[name].reachable(srv.limit)))

    # --- Telegram ---------------------------------------------------------------------------
    def telegram(self):
        """The fake Bot API (tools/peers/fake_telegram.py) with its own test CA; .ca_der for the device."""
        pki = fake_telegram.make_ca(os.path.join(self.dir, 'pki'))
        tg = fake_telegram.FakeTelegram([TOKEN], pki['cert'], pki['key']).start()
        tg.ca_der = pki['ca_der']
        self._stops.append(tg.stop)
        return tg

    # --- the Internet -----------------------------------------------------------------------
    def internet(self):
        t = ProbeTarget()
        self._stops.append(t.stop)
        return t

    # --- a device configured for them -------------------------------------------------------
    def config(self, servers=None, telegram=None, probe=None, **sections):
        """Config overrides for the `firmware` fixture. servers: LFCP servers or UDP ports (the device gets its
        own free UDP port and the shared key); telegram: a FakeTelegram; probe: TCP ports."""
        cfg = {}
        if servers is not None:
            ports = [getattr(s, 'port', s) for s in servers]
            cfg['lfcp'] = {'key': KEY, 'port': free_port(socket.SOCK_DGRAM), 'heartbeat_s': 1,
                           'servers': ['127.0.0.1:%d' % p for p in ports]}
        if telegram is not None:
            cfg['telegram'] = {'token': TOKEN, 'chat_ids': [CHAT], 'api_url': telegram.url,
                               'ca_file': telegram.ca_der, 'poll_s': 0}
        if probe is not None:
            cfg['internet'] = {'probe': ['127.0.0.1:%d' % p for p in probe], 'timeout_s': 1,
                               'interval_s': 5}
        for name, values in sections.items():
            cfg.setdefault(name, {}).update(values)
        return cfg

    def close(self):
        for stop in reversed(self._stops):
            try:
                stop()
            except Exception:
                pass
        self._stops = []


@pytest.fixture
def peers(tmp_path):
    p = Peers(tmp_path / 'peers')
    yield p
    p.close()
