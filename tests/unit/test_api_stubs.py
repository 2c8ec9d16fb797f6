"""Every firmware module against the published ESP32 type stubs of each supported MicroPython
version (PyPI micropython-esp32-stubs, pinned in tools/build/versions.py), with mypy.

Only what a board would lack is checked: a module, a function, an attribute or a keyword that is
not there (mypy's attr-defined, name-defined, import-not-found, call-arg). Types and style are not.
The stand-ins in tools/sim/board may offer nothing the stubs do not have, so what the firmware
calls on them through the modules app.py hands over exists on a board too.
"""
import ast
import json
import os
import re
import subprocess
import sys

import pytest
from testkit.paths import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

VERSIONS_PY = os.path.join(ROOT, 'tools', 'build', 'versions.py')
TABLE = json.loads(subprocess.run([sys.executable, VERSIONS_PY], capture_output=True, text=True,
                                  check=True).stdout)
SUPPORTED = sorted(TABLE['versions'])
MYPY = os.path.join(os.path.dirname(sys.executable), 'mypy')
CHECKED = ('attr-defined', 'name-defined', 'import-not-found', 'call-arg')

# Findings that are the stubs' gaps, not the board's, each with the reason: (versions or None for
# all, file, pattern of the message).
KNOWN = [
    (None, 'firmware/alarm/(luma|detector|grid).py', r'Name "(ptr8|ptr16|ptr32|uint)" is not defined',
     'viper type names: the compiler knows them, no module defines them'),
    (None, 'firmware/core/aio.py', r'Module has no attribute "(core|_io_queue)"',
     'asyncio.core._io_queue: MicroPython asyncio internals on every version (core/aio is the one '
     'module that may touch them), not in the stubs'),
    (None, 'firmware/lfcp/codec.py', r'module named "hmac"',
     'CPython only, for the host server; the import is guarded by ImportError'),
    (None, 'firmware/app.py', r'module named "camera"',
     'no stubs are published for the camera module: the adapters are checked against the '
     'stand-ins, which follow the drivers\' documented APIs'),
    (None, 'firmware/config/schema.py', r'"object" has no attribute "__iter__"',
     'mypy infers object for the schema table; not an API'),
    (('1.24',), 'firmware/.*', r'Module has no attribute "wait_for_ms"',
     'asyncio.wait_for_ms exists since 1.13; the 1.24 stubs miss it'),
    (('1.24', '1.29'), 'firmware/net/http_client.py', r'"SSLContext" has no attribute "verify_mode"',
     'SSLContext.verify_mode is a settable attribute of MicroPython\'s ssl; the stubs miss it'),
    (('1.21',), 'firmware/storage/card.py', r'module named "vfs"',
     'vfs arrived in 1.23; on 1.21 the import is guarded by ImportError and os has the same'),
    (('1.21',), 'firmware/(alarm/panel|ota/install|core/compat).py', r'"tuple\[Any, \.\.\.\]" has no attribute "version"',
     'sys.implementation.version exists on 1.21; its stubs type sys.implementation as a tuple'),
]
LINE = re.compile(r'^(?P<file>[^:]+):(?P<line>\d+): error: (?P<msg>.*)  \[(?P<code>[a-z-]+)\]$')


def stubs(version):
    return subprocess.run([sys.executable, VERSIONS_PY, 'stubs', version], capture_output=True,
                          text=True, check=True).stdout.strip()


def mypy(version, *targets, cache=None):
    """The findings of the checked kinds, as (file, line, code, message)."""
    d = stubs(version)
    r = subprocess.run([MYPY, '--custom-typeshed-dir', d, '--check-untyped-defs',
                        '--python-version', '3.11', '--follow-imports=silent',
                        '--explicit-package-bases', '--no-error-summary', '--show-error-codes',
                        '--cache-dir', cache or os.devnull] + list(targets),
                       cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, MYPYPATH=d + os.pathsep + os.path.join(ROOT, 'lib')))
    if r.returncode not in (0, 1):
        pytest.fail('mypy failed to run:\n' + r.stdout[-3000:] + r.stderr[-3000:])
    found = []
    for line in r.stdout.splitlines():
        m = LINE.match(line)
        if m and m.group('code') in CHECKED:
            found.append((m.group('file'), int(m.group('line')), m.group('code'), m.group('msg')))
    return found


def known(version, f, msg):
    return any((vs is None or version in vs) and re.fullmatch(fp, f) and re.search(mp, msg)
               for vs, fp, mp, _ in KNOWN)


@pytest.mark.parametrize('version', SUPPORTED)
def test_firmware_uses_only_what_the_board_has(version, tmp_path):
    found = mypy(version, '-p', 'firmware', cache=str(tmp_path / 'cache'))
    missing = ['%s:%d: %s [%s]' % (f, n, msg, code) for f, n, code, msg in found
               if not known(version, f, msg)]
    assert not missing, 'not on MicroPython %s:\n' % version + '\n'.join(missing)


WRONG = '''\
import machine
import network
import time

machine.Pin(4).nonsense()
time.monotonic()
network.WLAN(network.STA_IF).ipconfig('addr4')
'''


@pytest.mark.parametrize('version', ['1.21', TABLE['default']])
def test_a_call_the_board_lacks_fails_the_check(version, tmp_path):
    """A deliberately wrong call fails; so does an API of a newer version on an older one."""
    (tmp_path / 'wrong.py').write_text(WRONG)
    found = mypy(version, str(tmp_path / 'wrong.py'), cache=str(tmp_path / 'cache'))
    lines = {n: msg for _, n, _, msg in found}
    assert 'nonsense' in lines.get(5, ''), found
    assert 'monotonic' in lines.get(6, ''), found
    if version == '1.21':   # WLAN.ipconfig exists from 1.24 on
        assert 'ipconfig' in lines.get(7, ''), found
    else:
        assert 7 not in lines, found


# --- the stand-ins -------------------------------------------------------------------------
def api(path):
    """{public name: None, or the set of a class's public names} of a module or a stub."""
    out = {}
    for n in ast.parse(open(path).read()).body:
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out[n.name] = None
        elif isinstance(n, ast.ClassDef):
            members = set()
            for m in n.body:
                if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    members.add(m.name)
                for t in (m.targets if isinstance(m, ast.Assign) else
                          [m.target] if isinstance(m, ast.AnnAssign) else []):
                    if isinstance(t, ast.Name):
                        members.add(t.id)
            out[n.name] = members
        for t in (n.targets if isinstance(n, ast.Assign) else
                  [n.target] if isinstance(n, ast.AnnAssign) else []):
            if isinstance(t, ast.Name):
                out[t.id] = None
    return {k: v for k, v in out.items() if not k.startswith('_')}


@pytest.mark.parametrize('module', ['machine', 'network', 'esp32', 'board_time'])
def test_stand_ins_offer_nothing_the_board_lacks(module):
    """Every public name of a stand-in (and of its classes) is in the ESP32 stubs of a supported
    version: the simulator offers no API that no board has. (Names of one version only, such as
    WLAN.ipconfig from 1.24 on, the firmware reaches through net/addresses.py with a fallback.)"""
    sim = api(os.path.join(ROOT, 'tools', 'sim', 'board', module + '.py'))
    real = {'board_time': 'time'}.get(module, module)   # power_on.py makes it the board's `time`
    boards = [api(os.path.join(stubs(v), real + '.pyi')) for v in SUPPORTED]
    extra = []
    for name, members in sorted(sim.items()):
        having = [b for b in boards if name in b]
        if not having:
            extra.append(name)
            continue
        for m in sorted(members or ()):
            if not m.startswith('_') and not any(m in (b[name] or ()) for b in having):
                extra.append('%s.%s' % (name, m))
    assert not extra, 'the %s stand-in has what no board has: %s' % (module, ', '.join(extra))
