"""The architecture, checked: hardware only through the composition root, asyncio's and
microdot's internals only in core/aio.py, no import cycle, feature folders independent (only the
web front end reaches into the features whose pages it serves; nothing reaches into web/)."""
import ast
import os
import re

from testkit.paths import ROOT

FW = os.path.join(ROOT, 'firmware')
HARDWARE = ('camera', 'network', 'machine', 'esp32')
SHARED = ('core', 'net', 'config', 'camera')  # what a feature folder may import
FRONT = ('web',)  # the HTTP front end serves the features' routes: it may import them


def modules():
    for d, _, names in os.walk(FW):
        for n in names:
            if n.endswith('.py'):
                path = os.path.join(d, n)
                rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, '.')
                yield rel.replace('.__init__', ''), path


def imports(path):
    out = set()
    for n in ast.walk(ast.parse(open(path).read())):
        if isinstance(n, ast.ImportFrom) and n.module:
            for a in n.names:
                full = n.module + '.' + a.name
                out.add(full if os.path.exists(os.path.join(ROOT, *full.split('.')) + '.py')
                        else n.module)
        elif isinstance(n, ast.Import):
            out.update(a.name for a in n.names)
    return out


def test_only_the_composition_root_imports_hardware():
    bad = [(m, i) for m, p in modules() for i in imports(p)
           if i.split('.')[0] in HARDWARE and m != 'firmware.app']
    assert not bad, bad


def test_only_aio_touches_asyncio_and_microdot_internals():
    pattern = re.compile(r'_io_queue|\.sock\[|print_exception\s*=|microdot\.microdot|\bstream\.s\b')
    bad = [m for m, p in modules()
           if m != 'firmware.core.aio' and pattern.search(open(p).read())]
    assert not bad, bad


def test_no_import_cycle_and_features_stay_apart():
    graph = {m: {i for i in imports(p) if i.startswith('firmware.')} for m, p in modules()}
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, ()):
                assert nxt != start, 'import cycle: ' + ' -> '.join(path + [nxt])
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
    for m, deps in graph.items():
        if m == 'firmware.app' or m.count('.') < 2:
            continue
        for d in deps:
            assert d != 'firmware.app', '%s imports the composition root' % m
            if d.count('.') < 2:
                continue  # a module of its own at the top (firmware.version)
            a, b = m.split('.')[1], d.split('.')[1]
            assert a == b or b in SHARED or a in FRONT, \
                '%s imports %s: features talk through app.py' % (m, d)


def test_every_package_init_is_empty():
    for d, _, names in os.walk(FW):
        if '__init__.py' in names:
            assert os.path.getsize(os.path.join(d, '__init__.py')) == 0, d
