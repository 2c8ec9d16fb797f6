#!/usr/bin/env python3
"""Motion benchmark: detection quality on the labelled scene set, speed, instructions, memory.

Runs firmware/alarm/luma.py + firmware/alarm/detector.py on the MicroPython VM (the unix port, x64
native code for the viper functions) and prints tables; never asserts:

  1. per condition of tools/sim/motion_set.py: recall (motion events that triggered), false alarms
     per 1000 frames, frames from the first motion frame to the alarm (min_frames=2: >= 1);
     the real-photo set (tools/sim/motion_set_real.py) by light and speed, and its quiet kinds
  2. ms per frame on the VM for extraction and detection at QVGA, VGA, SVGA
  3. instructions for one steady-state QVGA frame (valgrind --tool=callgrind, a run with
     2 frames minus a run with 1 frame), extraction and detection separately
  4. heap growth per 100 frames, heap the detector and the extractor hold beyond the frame

`python bench/bench_motion.py [--no-valgrind]`; main() is called by `make bench`.
"""
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
from sim import motion_set  # noqa: E402
from testkit import callgrind as cg  # noqa: E402

VM = motion_set.VM
ENV = dict(os.environ, MICROPYPATH=ROOT)
VALGRIND = cg.VALGRIND
SIZES = [('QVGA', 320, 240), ('VGA', 640, 480), ('SVGA', 800, 600)]

# VM side: time / count one part of the pipeline over a frame file
VM_BENCH = r'''
import sys, time, gc, struct
from firmware.alarm.luma import LumaExtractor
from firmware.alarm.detector import Detector
mode, fn, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
a = b = c = 0
with open(fn, 'rb') as f:
    data = f.read()
frames = []
p = 0
while p < len(data):
    k = struct.unpack_from('<I', data, p)[0]
    frames.append(data[p + 4:p + 4 + k])
    p += 4 + k
ex = LumaExtractor(100, 75)
w8, h8 = ex.extract(frames[0])
gc.collect()
m0 = gc.mem_alloc()
det = Detector(w8, h8)
gc.collect()
det_heap = gc.mem_alloc() - m0
lumas = []
for fr in frames:
    ex.extract(fr)
    lumas.append(bytes(ex.luma[:w8 * h8]))
for l in lumas[:6]:        # past the warm-up: steady state
    det.feed(l, w8, h8)
nf = len(frames)

def run_extract(ex, frames, n):
    i = 0
    while i < n:
        ex.extract_into(frames[i % nf])
        i += 1

def run_detect(det, lumas, n):
    i = 0
    while i < n:
        det.feed(lumas[i % nf], w8, h8)
        i += 1

def run_both(ex, det, frames, n):
    i = 0
    while i < n:
        ex.extract_into(frames[i % nf])
        det.feed(ex.luma, w8, h8)
        i += 1

if mode == 'extract':
    gc.disable()
    run_extract(ex, frames, n)
elif mode == 'detect':
    gc.disable()
    run_detect(det, lumas, n)
elif mode == 'time':
    te = td = 1 << 30
    for _ in range(5):   # best of 5: the PC is shared
        t0 = time.ticks_us(); run_extract(ex, frames, n); t1 = time.ticks_us()
        run_detect(det, lumas, n); t2 = time.ticks_us()
        te = min(te, time.ticks_diff(t1, t0))
        td = min(td, time.ticks_diff(t2, t1))
    print(te / n / 1000, td / n / 1000)
gc.collect()
if mode == 'heap':
    run_both(ex, det, frames, 10)
    gc.collect(); a = gc.mem_alloc()
    run_both(ex, det, frames, 100)
    gc.collect(); b = gc.mem_alloc()
    ex2 = LumaExtractor(w8, h8)
    gc.collect(); c = gc.mem_alloc()
    print(b - a, det_heap, c - b)
'''


def frames_file(path, w, h, n=12, quality=motion_set.QUALITY):
    """n frames of a person crossing at w x h (4:2:0), length-prefixed."""
    import struct
    with open(path, 'wb') as f:
        for i in range(n):
            objs = [motion_set.person(0.1 + 0.8 * i / n, phase=i)]
            fr = motion_set.jpeg(motion_set.render(objs, seed=i, w=w, h=h), quality)
            f.write(struct.pack('<I', len(fr)))
            f.write(fr)
    return path


def vm(args, timeout=120):
    p = subprocess.run([VM, '-X', 'heapsize=4M'] + args, capture_output=True, text=True,
                       timeout=timeout, env=ENV)
    if p.returncode:
        raise RuntimeError(p.stdout[-1000:] + p.stderr[-1000:])
    return p.stdout


def callgrind(script, mode, fn, n, td):
    out = os.path.join(td, 'cg.%s.%d' % (mode, n))
    return cg.count([VM, '-X', 'heapsize=4M', script, mode, fn, str(n)], out, env=ENV)


def table(rows, head):
    w = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    print('  '.join(str(h).ljust(w[i]) for i, h in enumerate(head)))
    print('  '.join('-' * x for x in w))
    for r in rows:
        print('  '.join(str(c).ljust(w[i]) for i, c in enumerate(r)))


def quality_table(params=None):
    res = motion_set.evaluate(params=params)
    rows = []
    tot = {'ev': 0, 'hit': 0, 'fa': 0, 'fr': 0, 'lat': []}
    for m in res:
        lat = m['latency']
        rows.append([m['name'], m['kind'], m['frames'],
                     '%d/%d = %.2f' % (m['hits'], m['events'], m['recall'])
                     if m['events'] else '-',
                     '%.1f' % (1000.0 * m['false'] / m['frames']),
                     ('%d..%d' % (min(lat), max(lat)) if lat else '-')])
        tot['fa'] += m['false']
        tot['fr'] += m['frames']
    table(rows, ['condition', 'kind', 'frames', 'recall', 'false/1000', 'frames to alarm'])

    def agg(pred):
        sel = [m for m in res if pred(m)]
        ev = sum(m['events'] for m in sel)
        hit = sum(m['hits'] for m in sel)
        lat = sorted(x for m in sel for x in m['latency'])
        return hit, ev, lat

    idx = {c['name']: c for c in motion_set.ensure()}
    big = lambda m: m['kind'] == 'motion' and ((idx[m['name']]['area'] or 0) >= 3
                                               or idx[m['name']].get('person'))
    h, e, lat = agg(big)
    hb, eb, latb = agg(lambda m: big(m) and 'box' in m['name'])
    h1, e1, _ = agg(lambda m: m['kind'] == 'motion' and idx[m['name']]['area'] == 1)
    quiet = [m for m in res if m['kind'] == 'quiet']
    print()
    print('objects >= 3 %% (boxes and people): recall %d/%d = %.3f   (goal >= 0.95)'
          % (h, e, h / e))
    print('objects of 1 %%: recall %d/%d = %.2f (below the default area threshold)'
          % (h1, e1, h1 / e1 if e1 else 0))
    print('frames from the first motion frame to the alarm, boxes >= 3 %%: median %d, max %d'
          '   (goal <= 3)' % (latb[len(latb) // 2], latb[-1]))
    print('false alarms: %d in %d quiet frames (noise, light steps +-10..50 %%, ramps, flicker, '
          'auto-exposure, quality 10..40), %d in all %d frames   (goal 0)'
          % (sum(m['false'] for m in quiet), sum(m['frames'] for m in quiet), tot['fa'],
             tot['fr']))
    return res


def _med(xs):
    return xs[len(xs) // 2] if xs else '-'


def real_table(params=None):
    """The real-photo set (tools/sim/motion_set_real.py): motion by light and speed, quiet
    scenarios by kind, and the goal lines."""
    from sim import motion_set_real
    res = motion_set_real.evaluate(params=params)
    rows = []
    for dusk in (False, True):
        for speed in motion_set_real.SPEEDS:
            sel = [(c, m) for c, m in res if c['kind'] == 'motion' and c['dusk'] == dusk
                   and c['speed'] == speed]
            big = [(c, m) for c, m in sel if c['area'] >= 3]
            ff = sorted(m['from_first'] for c, m in big if m['from_first'] is not None)
            f15 = sorted(m['from_15'] for c, m in sel if m['from_15'] is not None)
            small = [(c, m) for c, m in sel if c['area'] < 3]
            rows.append(['dusk' if dusk else 'day', speed, len(sel),
                         '%d/%d' % (sum(1 for c, m in big if m['hit']), len(big)),
                         '%d/%d' % (sum(1 for c, m in small if m['hit']), len(small)),
                         '%s / %s' % (_med(ff), ff[-1] if ff else '-'),
                         '%s / %s' % (_med(f15), f15[-1] if f15 else '-')])
    table(rows, ['light', 'px/frame', 'scenarios', 'recall >= 3 %', 'recall 1 %',
                 'first pixel -> alarm (median / max)', '1.5 % -> alarm (median / max)'])
    print()
    kinds = [('noise', 'noise'), ('dusk_noise', 'dusk noise'), ('step', 'held steps +-20/40/60 %'),
             ('ramp', 'ramps'), ('flicker', 'flicker 10 %'), ('sway', 'sway'), ('shake', 'shake 1 px'),
             ('ae_', 'auto-exposure overshoot / recovery'), ('wb_', 'white balance'),
             ('ircut', 'IR-cut switch')]
    rows = []
    for key, label in kinds:
        sel = [(c, m) for c, m in res if c['kind'] == 'quiet' and c['name'][2:].startswith(key)]
        rows.append([label, len(sel), sum(m['frames'] for c, m in sel),
                     sum(m['false'] for c, m in sel), max(m['peak'] for c, m in sel)])
    table(rows, ['quiet', 'scenarios', 'frames', 'false alarms', 'highest score'])
    sm = motion_set_real.summarize(res)
    print()
    print('objects >= 3 %%: recall %d/%d   (goal: all)%s' % (
        sm['big_hits'], sm['big'], '; missed: ' + ', '.join(sm['big_missed'])
        if sm['big_missed'] else ''))
    print('objects of 1 %%: recall %d/%d (below the default area threshold)'
          % (sm['small_hits'], sm['small']))
    f15 = sm['from_15']
    print('from 1.5 %% of the picture to the alarm: median %s, max %s, %d of %d within 3   '
          '(goal: all within 3, median <= 1)' % (_med(f15), f15[-1] if f15 else '-',
                                                 sum(1 for x in f15 if x <= 3), len(f15)))
    ff = sm['fast_first']
    print('objects >= 3 %% at >= 4 px/frame, first pixel to the alarm: median %s, max %s, '
          '%d of %d within 5   (goal: all within 5)' % (_med(ff), ff[-1] if ff else '-',
                                                         sum(1 for x in ff if x <= 5), len(ff)))
    print('false alarms: %d in %d quiet frames (goal 0); highest quiet score %d per mille'
          % (sm['false'], sm['quiet_frames'], sm['quiet_peak']))
    if sm['late_15']:
        print('later than 3 frames after 1.5 %%: %s' % ', '.join(
            '%s %d' % x for x in sm['late_15']))
    return res


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    use_valgrind = '--no-valgrind' not in argv and os.path.exists(VALGRIND)
    print('== motion detection on the labelled set (tools/sim/motion_set.py, QVGA, default '
          'Detector: sensitivity 5, min_frames 2) ==')
    quality_table()
    print()
    print('== motion detection on the real-photo set (tools/sim/motion_set_real.py, QVGA, '
          'default Detector) ==')
    real_table()
    td = tempfile.mkdtemp(prefix='bench-motion-')
    try:
        script = os.path.join(td, 'bench.py')
        with open(script, 'w') as f:
            f.write(VM_BENCH)
        files = {name: frames_file(os.path.join(td, name + '.bin'), w, h)
                 for name, w, h in SIZES}
        print()
        print('== speed on the VM (unix port, x64 native viper code), person crossing, '
              'quality %d 4:2:0 ==' % motion_set.QUALITY)
        rows = []
        for name, w, h in SIZES:
            ext, det = map(float, vm([script, 'time', files[name], '200']).split())
            size = os.path.getsize(files[name]) // 12
            rows.append([name, '%dx%d' % ((w + 7) // 8, (h + 7) // 8), '~%d' % size,
                         '%.3f' % ext, '%.3f' % det, '%.3f' % (ext + det)])
        table(rows, ['frame', 'cells', 'JPEG bytes', 'extract ms', 'detect ms', 'total ms'])
        if use_valgrind:
            print()
            print('== instructions per steady-state QVGA frame (callgrind: 2-frame run minus '
                  '1-frame run) ==')
            rows = []
            q85 = frames_file(os.path.join(td, 'q85.bin'), 320, 240, quality=85)
            for mode, fn, what in (
                    ('extract', files['QVGA'], 'quality %d, ~%d bytes' % (
                        motion_set.QUALITY, os.path.getsize(files['QVGA']) // 12)),
                    ('extract', q85, 'quality 85 (the simulator\'s frames), ~%d bytes'
                     % (os.path.getsize(q85) // 12)),
                    ('detect', files['QVGA'], '40x30 cells')):
                one = callgrind(script, mode, fn, 1, td)
                two = callgrind(script, mode, fn, 2, td)
                eleven = callgrind(script, mode, fn, 11, td)
                rows.append([mode, what, '{:,}'.format(two - one),
                             '{:,}'.format((eleven - one) // 10)])
            table(rows, ['part', 'frame', '2 frames - 1 frame', '(11 - 1 frames) / 10'])
            print('goal for extraction: <= 3,000,000 (x64 instructions of the unix VM; the ESP32 runs '
                  'the same viper code compiled for xtensawin)')
        print()
        print('== memory ==')
        rows = []
        for name, w, h in SIZES:
            grew, det_heap, ext_heap = map(int, vm([script, 'heap', files[name], '1']).split())
            rows.append([name, grew, det_heap, ext_heap])
        table(rows, ['frame', 'heap growth / 100 frames', 'detector heap', 'extractor heap'])
        print('goal: no growth; detector <= 65536 bytes')
    finally:
        shutil.rmtree(td, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
