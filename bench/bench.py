"""`make bench`: every benchmark of the project, one after the other, as tables.

Each bench/bench_*.py has a main() that prints its own tables; this runs them in a fixed order,
keeps going when one fails (and says so), and saves the whole output to build/bench.txt.
BENCH_ONLY=stream,motion runs a subset.
"""
import contextlib
import importlib
import io
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

ORDER = ('stream', 'cost', 'motion', 'alarm', 'lfcp', 'telegram', 'clips', 'mqtt', 'fleet', 'fuzz', 'ops', 'connections')


class Tee(io.TextIOBase):
    def __init__(self, *outs):
        self.outs = outs

    def write(self, s):
        for o in self.outs:
            o.write(s)
            o.flush()
        return len(s)


def main():
    only = [x for x in os.environ.get('BENCH_ONLY', '').split(',') if x]
    os.makedirs(os.path.join(ROOT, 'build'), exist_ok=True)
    failed = []
    with open(os.path.join(ROOT, 'build', 'bench.txt'), 'w') as log:
        out = Tee(sys.stdout, log)
        with contextlib.redirect_stdout(out):
            for name in ORDER:
                if only and name not in only:
                    continue
                if not os.path.exists(os.path.join(HERE, 'bench_%s.py' % name)):
                    print('\n== %s: no benchmark yet' % name)
                    continue
                print('\n== %s (bench/bench_%s.py) ==' % (name, name))
                t0 = time.monotonic()
                try:
                    importlib.import_module('bench_' + name).main()
                except SystemExit as e:
                    if e.code not in (0, None):
                        failed.append(name)
                except Exception:
                    traceback.print_exc(file=out)
                    failed.append(name)
                print('(%s: %.0f s)' % (name, time.monotonic() - t0))
            soak = os.path.join(ROOT, 'build', 'soak.txt')
            if os.path.exists(soak):
                print('\n== soak (last `make soak`, build/soak.txt) ==')
                with open(soak) as f:
                    print(f.read())
    if failed:
        print('benchmarks that failed: ' + ', '.join(failed))
        sys.exit(1)


if __name__ == '__main__':
    main()
