"""A real Mosquitto broker for tests and benchmarks: loopback, free port, password file and ACL.

    with Broker(tmp_dir) as b:          # users: cam (the device), ha (Home Assistant), intruder
        w = b.watch()                   # a paho client as 'ha', subscribed to everything
        w.wait('esp32cam/testcam/alarm', lambda p: p == b'armed_away')

The device account may write only its own topics and the discovery prefix, and read its own
topics; 'ha' may read and write everything; 'intruder' has an account and no rights.
"""
import getpass
import os
import subprocess
import threading
import time

from testkit.helpers import free_port, need_binary, wait_port

USERS = {'cam': 'cam-secret-1', 'ha': 'ha-secret-1', 'intruder': 'intruder-1', 'lfcp': 'lfcp-secret-1'}
ACL = """user cam
topic readwrite esp32cam/#
topic write homeassistant/#

user ha
topic readwrite #

user lfcp
topic readwrite lfcp/#
topic write homeassistant/#
"""


class Broker:
    def __init__(self, workdir, port=None, persistence=False, tls=None):
        """tls: the paths of fake_telegram.make_ca() (ca_pem, cert, key) for a second listener
        on .tls_port with that server certificate."""
        self.mosquitto = need_binary('mosquitto')
        self.passwd = need_binary('mosquitto_passwd', 'mosquitto')
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.port = port or free_port()
        self.proc = None
        self.conf = os.path.join(self.dir, 'mosquitto.conf')
        pw = os.path.join(self.dir, 'passwd')
        open(pw, 'w').close()
        for user, secret in USERS.items():
            subprocess.run([self.passwd, '-b', pw, user, secret], check=True, capture_output=True)
        os.chmod(pw, 0o600)
        acl = os.path.join(self.dir, 'acl')
        with open(acl, 'w') as f:
            f.write(ACL)
        os.chmod(acl, 0o600)
        with open(self.conf, 'w') as f:
            f.write('listener %d 127.0.0.1\nallow_anonymous false\npassword_file %s\n'
                    'acl_file %s\npersistence %s\npersistence_location %s/\n'
                    'log_dest file %s/mosquitto.log\nlog_type error\nlog_type warning\n'
                    'log_type notice\nuser %s\nmax_keepalive 3600\nmax_inflight_messages 1000\n'
                    'set_tcp_nodelay true\n'
                    % (self.port, pw, acl, 'true' if persistence else 'false', self.dir, self.dir,
                       getpass.getuser()))
            self.tls_port = None
            if tls:
                self.tls_port = free_port()
                f.write('listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\n'
                        % (self.tls_port, tls['ca_pem'], tls['cert'], tls['key']))

    def start(self):
        self.proc = subprocess.Popen([self.mosquitto, '-c', self.conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        if not wait_port(self.port, 10) or (self.tls_port and not wait_port(self.tls_port, 10)):
            self.stop()
            raise RuntimeError('mosquitto did not start: ' + self.log()[-2000:])
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self, down_s=0.0):
        self.stop()
        time.sleep(down_s)
        return self.start()

    def log(self):
        try:
            with open(os.path.join(self.dir, 'mosquitto.log')) as f:
                return f.read()
        except OSError:
            return ''

    def watch(self, user='ha', topics=('#',)):
        return Watcher(self.port, user, USERS[user], topics)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class Watcher:
    """A paho client recording the last message of each topic (and every message, in order)."""

    def __init__(self, port, user, password, topics=('#',)):
        import paho.mqtt.client as mqtt
        self.cond = threading.Condition()
        self.last = {}
        self.log = []
        self.connected = threading.Event()
        self.refused = None
        c = self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                      client_id='watcher-%d-%d' % (os.getpid(), id(self)))
        c.username_pw_set(user, password)
        c.max_inflight_messages_set(1000)

        def on_connect(client, userdata, flags, rc, props=None):
            if rc.is_failure:
                self.refused = str(rc)
                return
            for t in topics:
                client.subscribe(t, qos=1)
            self.connected.set()

        def on_message(client, userdata, msg):
            with self.cond:
                self.last[msg.topic] = msg.payload
                self.log.append((time.monotonic(), msg.topic, msg.payload, msg.retain))
                self.cond.notify_all()

        c.on_connect = on_connect
        c.on_message = on_message
        c.connect('127.0.0.1', port, keepalive=30)
        c.loop_start()
        if not self.connected.wait(10):
            self.close()
            raise RuntimeError('watcher: not connected (%s)' % self.refused)

    def wait(self, topic, pred=None, timeout=20.0, since=0):
        """The payload of the first message on `topic` (after log index `since`) for which
        pred(payload) holds; AssertionError naming the topic after `timeout`."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for _, t, p, _r in self.log[since:]:
                    if t == topic and (pred is None or pred(p)):
                        return p
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError('no message on %s within %ss; last: %r' % (
                        topic, timeout, self.last.get(topic)))
                self.cond.wait(left)

    def mark(self):
        with self.cond:
            return len(self.log)

    def publish(self, topic, payload, qos=1, retain=False):
        self.client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(5)

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()
