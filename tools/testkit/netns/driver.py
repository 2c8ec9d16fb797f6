"""Runs tools/testkit/vm/upnp_driver.py on the MicroPython VM and talks to it line by line."""
import json
import os
import queue
import subprocess
import threading
import time

from testkit.paths import ROOT

MP = os.path.join(ROOT, '.venv', 'bin', 'micropython')
DRIVER = os.path.join(ROOT, 'tools', 'testkit', 'vm', 'upnp_driver.py')


class VM:
    """One driver process; `call` sends a command and returns its JSON answer."""

    def __init__(self, flash, cfg, lan=None, prefix=(), heap='192K', web=None):
        with open(os.path.join(flash, 'config.json'), 'w') as f:
            json.dump(cfg, f)
        env = dict(os.environ)
        env['MICROPYPATH'] = ':'.join(['.frozen'] + [os.path.join(ROOT, p) for p in ('tools/sim/board', 'lib', '')])
        if lan:
            env['UPNP_LAN'] = lan
        if web:
            env['UPNP_WEB'] = str(web)
        self.p = subprocess.Popen(list(prefix) + [MP, '-X', 'heapsize=' + heap, DRIVER], cwd=flash,
                                  env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.answers = queue.Queue()
        self.notes = queue.Queue()
        self.lines = []
        threading.Thread(target=self._read, daemon=True).start()
        assert self._answer(30).get('ready'), self.output()

    def _read(self):
        for line in self.p.stdout:
            line = line.rstrip('\n')
            self.lines.append(line)
            if line.startswith('R '):
                self.answers.put(json.loads(line[2:]))
            elif line.startswith('N '):
                self.notes.put(json.loads(line[2:]))
        self.answers.put(None)

    def _answer(self, timeout):
        try:
            a = self.answers.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError('driver did not answer in %ss:\n%s' % (timeout, self.output()))
        if a is None:
            raise AssertionError('driver exited:\n' + self.output())
        return a

    def call(self, cmd, timeout=30, **kw):
        kw['cmd'] = cmd
        self.p.stdin.write(json.dumps(kw) + '\n')
        self.p.stdin.flush()
        return self._answer(timeout)

    def note(self, timeout=30):
        """The next notification text (what Telegram would send), or None after `timeout`."""
        try:
            return self.notes.get(timeout=timeout)
        except queue.Empty:
            return None

    def output(self):
        return '\n'.join(self.lines[-60:])

    def close(self):
        if self.p.poll() is None:
            try:
                self.p.stdin.write('{"cmd": "exit"}\n')
                self.p.stdin.flush()
                self.p.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.p.kill()
                self.p.wait(5)
        time.sleep(0)
