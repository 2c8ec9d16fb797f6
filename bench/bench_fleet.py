"""A fleet over MQTT: the reference LFCP server with 10,000 simulated devices, bridged into a real
Mosquitto.

The devices are lightweight host-side peers: a few UDP sockets on loopback, each sending for many
device names, authenticated HEARTBEATs at the production interval (lfcp.heartbeat_s, 17 s) with
the devices' phases spread over it. After one full interval (every device heard and announced to
the broker) a burst of alarms (MOAL) from distinct devices is sent; a subscriber on the broker
times each alarm from its datagram to its MQTT message. Prints heartbeats/s handled, alarm ->
MQTT latency (median, p99; goal p99 < 100 ms), and the server's memory per device.

BENCH_FLEET_DEVICES (10000), BENCH_FLEET_SECONDS (measurement after the warm-up interval, 20),
BENCH_FLEET_ALARMS (300) and BENCH_FLEET_BURST_S (1.0, the length of the burst). Never asserts.
"""
import json
import os
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from testkit.broker import USERS, Broker
from testkit.helpers import free_port
from testkit.paths import ROOT

from firmware.lfcp import codec as lfcp

DEVICES = int(os.environ.get('BENCH_FLEET_DEVICES', '10000'))
SECONDS = float(os.environ.get('BENCH_FLEET_SECONDS', '20'))
ALARMS = int(os.environ.get('BENCH_FLEET_ALARMS', '300'))
BURST_S = float(os.environ.get('BENCH_FLEET_BURST_S', '1.0'))
INTERVAL = 17.0          # firmware/config/schema.py lfcp.heartbeat_s default
SOCKETS = 64             # the server's per-address rate limit (200/s) stays far away
KEY = 'bench-fleet-key-0123456789'


WATCHER = '''
import json, signal, sys, time, threading
import paho.mqtt.client as mqtt
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
c.username_pw_set('ha', sys.argv[2])
ready = threading.Event()
seen = set()
def on_message(cl, u, m):
    name, what = m.topic.split('/', 2)[1:]
    if what == 'availability':
        if name not in seen:
            seen.add(name)
            if len(seen) == int(sys.argv[3]):
                print('announced', time.time(), flush=True)
    else:
        print(name, time.time(), json.loads(m.payload)['time'], flush=True)
c.on_connect = lambda cl, u, f, rc, p=None: (cl.subscribe('lfcp/+/alarm/event', 1),
                                             cl.subscribe('lfcp/+/availability', 0), ready.set())
c.on_message = on_message
c.connect('127.0.0.1', int(sys.argv[1]))
c.loop_start()
ready.wait(10)
time.sleep(0.3)
print('ready', flush=True)
signal.sigwait([signal.SIGTERM])
'''


def cpu_s(pid):
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def rss_kb(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    return 0


def stats(api):
    with urllib.request.urlopen('http://%s/stats' % api, timeout=5) as r:
        return json.load(r)


class Fleet:
    """DEVICES names over SOCKETS sockets; each device heartbeats once per INTERVAL."""

    def __init__(self, target):
        self.target = target
        self.key = lfcp.Hmac(KEY)
        self.names = ['cam%05d' % i for i in range(DEVICES)]
        self.seq = [0] * DEVICES
        self.socks = []
        self.sel = selectors.DefaultSelector()
        for _ in range(SOCKETS):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(('127.0.0.1', 0))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            s.setblocking(False)
            self.sel.register(s, selectors.EVENT_READ)
            self.socks.append(s)
        self.sent = 0
        self.acks = 0
        self.next = 0           # next device to heartbeat
        self.t0 = None

    def send(self, i, typ, params):
        self.seq[i] += 1
        data = lfcp.encode(self.names[i], typ, params, self.seq[i], self.key)
        try:
            self.socks[i % SOCKETS].sendto(data, self.target)
            self.sent += 1
        except BlockingIOError:
            pass

    def drain(self):
        for key, _ in self.sel.select(0):
            while True:
                try:
                    key.fileobj.recv(512)
                    self.acks += 1
                except BlockingIOError:
                    break

    def beat_until(self, now):
        """Send every heartbeat due by `now` (device i is due at t0 + (k + i/N) * INTERVAL)."""
        n = DEVICES
        due = int((now - self.t0) / INTERVAL * n)
        while self.next < due:
            self.send(self.next % n, 'HEARTBEAT', ('0',))
            self.next += 1

    def run(self, seconds, during=None):
        end = time.monotonic() + seconds
        while True:
            now = time.monotonic()
            if now >= end:
                return
            self.beat_until(now)
            if during:
                during(now)
            self.drain()
            time.sleep(0.002)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(os.path.join(tmp, 'broker')).start()
        udp, api = free_port(), free_port()
        env = dict(os.environ, LFCP_KEY=KEY, MQTT_PASSWORD=USERS['lfcp'])
        proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, 'tools', 'peers', 'lfcp_server.py'), 'serve',
             '--quiet', '--host', '127.0.0.1', '--port', str(udp), '--api', '127.0.0.1:%d' % api,
             '--mqtt', '127.0.0.1:%d' % broker.port, '--mqtt-user', 'lfcp'],
            env=env, stdout=subprocess.PIPE, text=True)
        w = None
        try:
            proc.stdout.readline()
            time.sleep(0.5)
            rss0 = rss_kb(proc.pid)
            # the subscriber in a process of its own: the fleet's sending loop must not delay
            # its receiving (and so inflate the latency) through this process's GIL
            w = subprocess.Popen([sys.executable, '-c', WATCHER, str(broker.port), USERS['ha'],
                                  str(DEVICES)], stdout=subprocess.PIPE, text=True)
            assert w.stdout.readline().strip() == 'ready'
            announced = threading.Event()
            threading.Thread(target=lambda: w.stdout.readline().startswith('announced') and
                             announced.set(), daemon=True).start()

            fleet = Fleet(('127.0.0.1', udp))
            fleet.t0 = time.monotonic()
            t_start = time.monotonic()
            fleet.run(INTERVAL + 1)                       # every device heard once
            limit = time.monotonic() + 120
            while not announced.is_set() and time.monotonic() < limit:
                fleet.run(0.5)                            # ... and announced on the broker
            warm = time.monotonic() - t_start
            rss1 = rss_kb(proc.pid)
            s0 = stats('127.0.0.1:%d' % api)
            acks0, t0, cpu0 = fleet.acks, time.monotonic(), cpu_s(proc.pid)
            sent_at = {}
            victims = list(range(0, DEVICES, max(1, DEVICES // ALARMS)))[:ALARMS]
            burst = {'t': None, 'k': 0}

            def alarms(now):
                if burst['t'] is None:
                    if now - t0 >= 2:
                        burst['t'] = now
                    return
                due = min(len(victims), int((now - burst['t']) / BURST_S * len(victims)) + 1)
                while burst['k'] < due:
                    i = victims[burst['k']]
                    burst['k'] += 1
                    sent_at[fleet.names[i]] = time.time()
                    fleet.send(i, 'MOAL', ('esp32_cam_motion_detected', 0, 0, 0, 0, 1000 + i))

            fleet.run(SECONDS, alarms)
            dt = time.monotonic() - t0
            cpu = (cpu_s(proc.pid) - cpu0) / dt
            load = os.getloadavg()[0]
            s1 = stats('127.0.0.1:%d' % api)
            fleet.run(3)
            w.terminate()
            got = {}
            at_server = {}
            for line in w.communicate(timeout=10)[0].splitlines():
                name, t, ts = line.split()
                got.setdefault(name, float(t))
                at_server.setdefault(name, float(ts))
            lat = sorted((got[n] - t) * 1000 for n, t in sent_at.items() if n in got)
            if os.environ.get('BENCH_FLEET_DEBUG'):
                print([round((got.get(n, 0) - t) * 1000) for n, t in list(sent_at.items())[::10]])
                print('server', [round((at_server.get(n, 0) - t) * 1000) for n, t in list(sent_at.items())[::10]])
            handled = s1['replies'] - s0['replies']
            print('| measurement | value |\n|---|---|')
            print('| devices (heard / on the server) | %d / %d |' % (DEVICES, s1['devices']))
            print('| heartbeat interval | %.0f s (offered %.0f/s) |' % (INTERVAL, DEVICES / INTERVAL))
            print('| datagrams answered by the server | %.0f/s over %.0f s |' % (handled / dt, dt))
            print('| answers received by the devices | %.0f/s |' % ((fleet.acks - acks0) / dt))
            print('| rejected by the server | %s |' % (s1['rejected'] or 'none'))
            print('| server CPU (one process) | %.0f%% of a core |' % (cpu * 100))
            print('| machine load average (%d cores) | %.1f |' % (os.cpu_count(), load))
            print('| warm-up: every device heard and announced on the broker | %s |' % (
                '%.1f s' % warm if announced.is_set() else 'NOT within %.0f s' % warm))
            if lat:
                p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
                print('| alarms -> MQTT | %d of %d in %.1f s |' % (len(lat), len(sent_at), BURST_S))
                print('| alarm -> MQTT latency median | %.1f ms |' % statistics.median(lat))
                print('| alarm -> MQTT latency p99 (goal < 100 ms) | %.1f ms |' % p99)
                print('| alarm -> MQTT latency max | %.1f ms |' % lat[-1])
                # where the time goes: before the server handles the datagram (its socket queue,
                # i.e. the server waiting for CPU) or after (bridge, broker, subscriber)
                q = sorted((at_server[n] - t) * 1000 for n, t in sent_at.items() if n in at_server)
                b = sorted((got[n] - at_server[n]) * 1000 for n in at_server if n in got)
                print('| of which datagram -> handled by the server, median / p99 | %.1f / %.1f ms |'
                      % (statistics.median(q), q[min(len(q) - 1, int(len(q) * 0.99))]))
                print('| of which server -> subscriber, median / p99 | %.1f / %.1f ms |'
                      % (statistics.median(b), b[min(len(b) - 1, int(len(b) * 0.99))]))
            else:
                print('| alarms -> MQTT | none of %d arrived |' % len(sent_at))
            print('| server memory per device (RSS, bridge included) | %.1f KB |' % (
                (rss1 - rss0) / DEVICES))
            print('| server RSS with %d devices | %.0f MB |' % (DEVICES, rss1 / 1024))
            print('| broker RSS | %.0f MB |' % (rss_kb(broker.proc.pid) / 1024))
        finally:
            if w and w.poll() is None:
                w.kill()
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            broker.stop()


if __name__ == '__main__':
    main()
