"""firmware/alarm/pir.py: the PIR as a second opinion, on the MicroPython VM with a simulated pin."""
import os
import subprocess

from testkit.paths import ROOT

VM = os.path.join(ROOT, '.venv', 'bin', 'micropython')


def _vm(code):
    p = subprocess.run([VM, '-c', code], capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, MICROPYPATH=ROOT))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return p.stdout.split()


PIN = r'''
import time
from firmware.alarm.pir import Pir
class Pin:            # a simulated input: the test sets what the PIR drives
    v = 0
    def value(self):
        return self.v
pin = Pin()
'''


def test_and_needs_both_or_needs_either():
    out = _vm(PIN + r'''
a = Pir(pin, 'and', hold_ms=50)
o = Pir(pin, 'or', hold_ms=50)
for p in (0, 1):
    pin.v = p
    for cam in (False, True):
        time.sleep_ms(60)          # past the hold of the previous case
        print(int(a.fuse(cam)[0]), int(o.fuse(cam)[0]), o.fuse(cam)[1])
''')
    # (pir, camera): (0,0) (0,1) (1,0) (1,1) -> and, or, reason of 'or'
    assert out == ['0', '0', 'pir', '0', '1', 'motion', '0', '1', 'pir', '1', '1', 'motion'], out


def test_a_pir_pulse_counts_for_hold_ms_after_it_ends():
    out = _vm(PIN + r'''
a = Pir(pin, 'and', hold_ms=200)
pin.v = 1
print(int(a.fuse(False)[0]))     # the PIR fired, the camera not yet
pin.v = 0
print(int(a.fuse(True)[0]))      # the camera a frame later: both agree
time.sleep_ms(250)
print(int(a.fuse(True)[0]))      # long after the pulse: the camera alone is not enough
''')
    assert out == ['0', '1', '0'], out


def test_a_bad_mode_is_refused_by_name():
    out = _vm(PIN + r'''
try:
    Pir(pin, 'xor')
except ValueError as e:
    print('refused:', e)
''')
    assert out[0] == 'refused:' and 'alarm.pir' in ' '.join(out), out
