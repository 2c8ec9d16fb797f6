"""Instruction counts of the MicroPython VM under valgrind's callgrind, for the benchmarks.

The VM runs inside CPython (the micropython_run extension): a fixed hash seed makes the counts
repeatable (with random seeds a 2-frame - 1-frame difference moved by +-50,000 instructions).
Counts are user-space x64 instructions (Ir); the kernel's work (socket sends, file reads) is not
in them. Two ways to cancel the VM's start: the difference of two run lengths (`count`), or a
window of a running process (`prefix` with callgrind_control's zero and dump: `window`).
"""
import glob
import os
import shutil
import subprocess

VALGRIND = shutil.which('valgrind') or '/usr/bin/valgrind'
CONTROL = shutil.which('callgrind_control') or '/usr/bin/callgrind_control'
ANNOTATE = shutil.which('callgrind_annotate') or '/usr/bin/callgrind_annotate'
SEED = {'PYTHONHASHSEED': '0'}


def available():
    return os.path.exists(VALGRIND) and os.path.exists(CONTROL)


def summary(path):
    """The instruction total of one callgrind output file."""
    with open(path) as f:
        for ln in f:
            if ln.startswith('summary:') or ln.startswith('totals:'):
                return int(ln.split()[1])
    raise RuntimeError('no callgrind summary in ' + path)


def prefix(out, threads=False):
    """The command prefix that runs a program under callgrind, writing `out`; threads=True:
    one file per thread (`out`.<dump>-<thread>), so a thread's work can be told apart."""
    return [VALGRIND, '--tool=callgrind', '--callgrind-out-file=' + out] + (
        ['--separate-threads=yes'] if threads else [])


def count(argv, out, env=None, timeout=600):
    """Instructions of one whole run of argv (e.g. [VM, script, args...])."""
    subprocess.run(prefix(out) + argv, capture_output=True, timeout=timeout,
                   env=dict(env or os.environ, **SEED), check=True)
    return summary(out)


def window(pid, out, action, timeout=120):
    """Start ('zero') or end ('dump') a counting window of a process run under `prefix(out,
    threads=True)`; after 'dump' returns {thread number: its output file} of that window."""
    before = set(glob.glob(out + '.*'))
    subprocess.run([CONTROL, '--zero' if action == 'zero' else '--dump', str(pid)],
                   capture_output=True, timeout=timeout, check=True)
    if action == 'zero':
        return None
    return dict((int(p.rsplit('-', 1)[1]), p) for p in set(glob.glob(out + '.*')) - before)


def native(path):
    """Instructions of one output file spent in code of no object file: the machine code the VM
    emits at run time (@micropython.viper and @micropython.native functions)."""
    text = subprocess.run([ANNOTATE, '--inclusive=no', '--threshold=100', path],
                          capture_output=True, text=True, timeout=300, check=True).stdout
    n = 0
    for ln in text.splitlines():
        parts = ln.split()
        if len(parts) >= 3 and parts[-1] == '[???]' and parts[-2].startswith('???:'):
            n += int(parts[0].replace(',', ''))
    return n
