#!/usr/bin/env python3
"""Labelled scene set for the motion detector (CPython + Pillow), and its evaluation on the VM.

`python tools/sim/motion_set.py OUTDIR` renders, once (a stamp holds the set's version):

    OUTDIR/index.json     [{name, kind, area, speed, quality, noise, labels: [0/1 per frame]}]
    OUTDIR/<name>.bin     the frames of one condition: (u32 little-endian length, JPEG) ...

Conditions (QVGA, baseline JPEG 4:2:0, Pillow quality 10..40, per-pixel sensor noise):
    box_a<area%>_s<speed>   a box of 1..20 % of the frame moving 1, 2 or 4 blocks (8x8 px)
                            per frame; 4 passes (colours, rows), quiet gaps between them
    person_*                a person crossing the room (tools/sim/scene.py), 1..4 blocks/frame
    noise_*, light_*, ramp_*, flicker_*, ae_*   no motion: sensor noise, global light steps
                            of +-10..50 %, slow ramps (clouds), flicker, auto-exposure steps
    q<Q>_*                  the same at JPEG quality 10..40
Labels: 1 when a moving object is visible in the frame. Every condition starts with quiet
frames: the detector is reset() at each condition's first frame.

The room comes from tools/sim/scene.py's render() when present (else a simple room drawn here).
`evaluate()` runs firmware/alarm/luma.py + firmware/alarm/detector.py on the MicroPython VM over the
set and returns per-condition recall, false alarms and latency (used by tests and the bench).
"""
import io
import json
import math
import os
import random
import struct
import subprocess
import sys
import tempfile

from PIL import Image, ImageDraw

VERSION = 5
W, H = 320, 240
BLOCK = 8
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VM = os.path.join(ROOT, '.venv', 'bin', 'micropython')
DEFAULT_DIR = os.path.join(ROOT, 'sim', 'motion_set')
QUALITY = 25          # Pillow scale; the OV2640 at quality 10..20 is about 20..40 here
COLOURS = [(40, 40, 50), (170, 40, 30), (40, 60, 160), (240, 235, 225), (100, 75, 45),
           (60, 120, 60)]

try:
    from sim import scene as _scene  # the simulator's room renderer
except ImportError:  # pragma: no cover - fallback when tools/sim/scene.py is absent
    _scene = None


# ---------------------------------------------------------------- rendering
def _own_room(w, h, objects, light, noise, seed):
    img = Image.new('RGB', (w, h), (190, 182, 168))
    d = ImageDraw.Draw(img)
    d.rectangle([0, int(h * 0.62), w, h], fill=(140, 105, 70))
    d.rectangle([int(w * 0.1), int(h * 0.15), int(w * 0.3), int(h * 0.45)], fill=(150, 190, 220))
    d.rectangle([int(w * 0.6), int(h * 0.3), int(w * 0.85), int(h * 0.75)], fill=(90, 60, 40))
    for o in objects or ():
        if o['kind'] == 'box':
            x, y, bw, bh = o['x'], o['y'], o['w'], o['h']
            d.rectangle([round((x - bw / 2) * w), round((y - bh / 2) * h),
                         round((x + bw / 2) * w), round((y + bh / 2) * h)], fill=o['color'])
        else:
            hh = o['h']
            d.rectangle([round((o['x'] - 0.045) * w), round((o['y'] - hh) * h),
                         round((o['x'] + 0.045) * w), round(o['y'] * h)], fill=o['color'])
    if light != 1.0:
        img = img.point(lambda v: min(255, int(v * light)))
    if noise > 0:
        rnd = random.Random(seed)
        px = img.load()
        for _ in range(w * h // 4):
            x, y = rnd.randrange(w), rnd.randrange(h)
            r, g, b = px[x, y]
            n = int(rnd.gauss(0, noise * 2))
            px[x, y] = (r + n, g + n, b + n)
    return img


def render(objects=None, light=1.0, noise=2.0, seed=0, w=W, h=H):
    if _scene is not None:
        return _scene.render(w, h, objects=objects, light=light, noise=noise, seed=seed)
    return _own_room(w, h, objects, light, noise, seed)


def box(x, y, bw, bh, color):
    if _scene is not None:
        return _scene.box(x, y, bw, bh, color)
    return {'kind': 'box', 'x': x, 'y': y, 'w': bw, 'h': bh, 'color': color}


def person(x, y=0.92, height=0.55, color=(60, 90, 60), phase=0.0):
    if _scene is not None:
        return _scene.person(x, y=y, height=height, color=color, phase=phase)
    return {'kind': 'person', 'x': x, 'y': y, 'h': height, 'color': color}


def jpeg(img, quality):
    b = io.BytesIO()
    img.save(b, 'JPEG', quality=quality, subsampling=2)  # 4:2:0, baseline
    return b.getvalue()


# ---------------------------------------------------------------- conditions
def _cond(name, kind, frames, labels, **meta):
    d = dict(name=name, kind=kind, labels=labels, area=None, speed=None, quality=QUALITY,
             noise=2.0)
    d.update(meta)
    d['frames'] = frames
    return d


_BG_LUMA = []


def _luma(c):
    return (299 * c[0] + 587 * c[1] + 114 * c[2]) / 1000


def _contrasting(rnd, rects, need=45):
    """A palette colour that differs from the room behind every position of the object by
    at least `need` grey levels on average (else the most different one): the set measures
    detection, not camouflage."""
    if not _BG_LUMA:
        _BG_LUMA.append(render(None, noise=0).convert('L'))
    bgl = _BG_LUMA[0]
    means = []
    for x, y, bw, bh in rects:
        box_ = (max(0, round((x - bw / 2) * W)), max(0, round((y - bh / 2) * H)),
                min(W, round((x + bw / 2) * W)), min(H, round((y + bh / 2) * H)))
        if box_[2] - box_[0] < 1 or box_[3] - box_[1] < 1:
            continue
        reg = bgl.crop(box_)
        means.append(sum(reg.tobytes()) / (reg.size[0] * reg.size[1]))
    best = [(min(abs(_luma(c) - m) for m in means) if means else 255, c) for c in COLOURS]
    good = [c for d, c in best if d >= need]
    return rnd.choice(good) if good else max(best)[1]


def _box_condition(area, speed, quality=QUALITY, noise=2.0, seed=0, lead=6, gap=5, passes=4,
                   steps=8, name=None):
    rnd = random.Random(seed * 1000 + int(area * 1000) + speed)
    side = math.sqrt(area)  # normalised: a 4:3 box of `area` of the frame
    dx = speed * BLOCK / W
    frames, labels = [], []
    k = 0

    def add(objs, lab, light=1.0):
        nonlocal k
        frames.append(jpeg(render(objs, light=light, noise=noise, seed=seed * 7919 + k), quality))
        labels.append(lab)
        k += 1

    for _ in range(lead):
        add(None, 0)
    for p in range(passes):
        right = p % 2 == 0
        y = rnd.uniform(side / 2 + 0.02, 1 - side / 2 - 0.02)
        x = side / 2 + 0.01 if right else 1 - side / 2 - 0.01
        path = [x + (j * dx if right else -j * dx) for j in range(steps)]
        col = _contrasting(rnd, [(xc, y, side, side) for xc in path])
        for j in range(steps):
            xc = x + (j * dx if right else -j * dx)
            if xc - side / 2 >= 1 or xc + side / 2 <= 0:
                break
            add([box(xc, y, side, side, col)], 1)
        for _ in range(gap):
            add(None, 0)
    return _cond(name or 'box_a%g_s%d' % (area * 100, speed), 'motion', frames, labels,
                 area=area * 100, speed=speed, quality=quality, noise=noise)


def _person_condition(speed, height=0.55, y=0.92, quality=QUALITY, noise=2.0, seed=0,
                      lead=6, gap=4, name=None, light=1.0):
    s = height * 0.75  # person height in view widths
    half = 0.12 * s
    dx = speed * BLOCK / W
    frames, labels = [], []
    k = 0
    for _ in range(lead):
        frames.append(jpeg(render(None, light=light, noise=noise, seed=seed * 7919 + k), quality))
        labels.append(0)
        k += 1
    for direction in (1, -1):
        x = -half if direction > 0 else 1 + half
        while -half <= x <= 1 + half:
            visible = x + half > 0 and x - half < 1
            objs = [person(x, y=y, height=height, phase=x * 6)]
            frames.append(jpeg(render(objs, light=light, noise=noise, seed=seed * 7919 + k), quality))
            labels.append(1 if visible else 0)
            k += 1
            x += direction * dx
        for _ in range(gap):
            frames.append(jpeg(render(None, light=light, noise=noise, seed=seed * 7919 + k), quality))
            labels.append(0)
            k += 1
    return _cond(name or 'person_s%d' % speed, 'motion', frames, labels, area=None,
                 speed=speed, quality=quality, noise=noise, person=height, light=light)


def _quiet_condition(name, lights, quality=QUALITY, noise=2.0, seed=0):
    frames = [jpeg(render(None, light=l, noise=noise, seed=seed * 7919 + k), quality)
              for k, l in enumerate(lights)]
    return _cond(name, 'quiet', frames, [0] * len(frames), quality=quality, noise=noise)


def conditions():
    """The whole labelled set: a list of condition dicts (frames as JPEG bytes)."""
    out = []
    for area in (0.01, 0.03, 0.05, 0.10, 0.20):
        for speed in (1, 2, 4):
            out.append(_box_condition(area, speed, seed=len(out)))
    for speed in (1, 2, 4):
        out.append(_person_condition(speed, seed=speed))
    out.append(_person_condition(3, height=0.85, y=0.99, seed=9, name='person_near_s3'))
    for sigma in (2, 4, 8):
        out.append(_quiet_condition('noise_%d' % sigma, [1.0] * 40, noise=sigma, seed=sigma))
    out.append(_quiet_condition('dusk_noise', [0.3] * 40, noise=6, seed=11))
    out.append(_person_condition(2, name='dusk_person_s2', seed=12, noise=6, light=0.3))
    for pct in (10, 20, 30, 50):
        for sign in (1, -1):
            l = 1 + sign * pct / 100
            out.append(_quiet_condition('light_%s%d' % ('+' if sign > 0 else '-', pct),
                                        [1.0] * 8 + [l] * 12 + [1.0] * 10, seed=pct + sign))
    out.append(_quiet_condition('ramp_down', [1.0 - 0.5 * k / 60 for k in range(60)], seed=3))
    out.append(_quiet_condition('ramp_up', [0.75 + 0.45 * k / 60 for k in range(60)], seed=4))
    out.append(_quiet_condition('flicker_alt8', [1.0 - 0.08 * (k % 2) for k in range(40)],
                                seed=5))
    out.append(_quiet_condition('flicker_sin10',
                                [1.0 + 0.10 * math.sin(k * 2 * math.pi / 7) for k in range(40)],
                                seed=6))
    out.append(_quiet_condition('ae_lamp_off', [1.0] * 6 + [0.55, 0.55, 0.65, 0.65, 0.75, 0.75,
                                                            0.85, 0.85, 0.93, 0.93] + [1.0] * 14,
                                seed=7))
    out.append(_quiet_condition('ae_lamp_on', [0.7] * 6 + [1.3, 1.3, 1.2, 1.2, 1.1, 1.1, 1.02,
                                                           1.02] + [0.98] * 14, seed=8))
    for q in (10, 20, 30, 40):
        out.append(_quiet_condition('q%d_noise' % q, [1.0] * 40, quality=q, seed=20 + q))
        out.append(_quiet_condition('q%d_light-30' % q, [1.0] * 8 + [0.7] * 12, quality=q,
                                    seed=40 + q))
        out.append(_box_condition(0.03, 2, quality=q, seed=q, name='q%d_box_a3_s2' % q))
        out.append(_person_condition(2, quality=q, seed=q, name='q%d_person_s2' % q))
    return out


# ---------------------------------------------------------------- files
def write_set(outdir, conds=None, stamp=None):
    """Write a set (this one, or `conds` with their own `stamp`) as index.json + <name>.bin."""
    conds = conditions() if conds is None else conds
    os.makedirs(outdir, exist_ok=True)
    index = []
    for c in conds:
        with open(os.path.join(outdir, c['name'] + '.bin'), 'wb') as f:
            for fr in c['frames']:
                f.write(struct.pack('<I', len(fr)))
                f.write(fr)
        index.append({k: v for k, v in c.items() if k != 'frames'})
    with open(os.path.join(outdir, 'index.json'), 'w') as f:
        json.dump(index, f)
    with open(os.path.join(outdir, '.stamp'), 'w') as f:
        f.write((stamp or _stamp()) + '\n')
    return index


def _stamp():
    """The set's version and a hash of the code that renders it (this file, scene.py)."""
    import hashlib
    h = hashlib.sha1()
    for fn in (__file__, getattr(_scene, '__file__', None)):
        if fn:
            with open(fn, 'rb') as f:
                h.update(f.read())
    return '%d %s' % (VERSION, h.hexdigest()[:16])


def ensure(outdir=DEFAULT_DIR):
    """Render the set into outdir unless an up-to-date copy is there; return the index."""
    return ensure_set(outdir, _stamp(), write_set)


def ensure_set(outdir, stamp, write):
    """The index in outdir if its stamp is `stamp`, else write(tmp) rendered beside and swapped
    in: a concurrent reader never sees half a set."""
    try:
        with open(os.path.join(outdir, '.stamp')) as f:
            if f.read().strip() == stamp:
                with open(os.path.join(outdir, 'index.json')) as g:
                    return json.load(g)
    except (OSError, ValueError):
        pass
    tmp = '%s.tmp%d' % (outdir.rstrip('/'), os.getpid())
    index = write(tmp)
    old = '%s.old%d' % (outdir.rstrip('/'), os.getpid())
    try:
        os.rename(outdir, old)
    except OSError:
        old = None
    os.rename(tmp, outdir)
    if old:
        import shutil
        shutil.rmtree(old, ignore_errors=True)
    return index


# ---------------------------------------------------------------- evaluation on the VM
VM_DRIVER = r'''
import sys, json, struct, gc
from firmware.alarm.luma import LumaExtractor
from firmware.alarm.detector import Detector
setdir, out_fn, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
names = None
if len(sys.argv) > 4:   # a file: the unix VM dies on an argument over 255 bytes
    with open(sys.argv[4]) as f:
        names = f.read().split(',')
with open(setdir + '/index.json') as f:
    index = json.load(f)
ex = LumaExtractor(100, 75)
det = None
out = open(out_fn, 'w')
for c in index:
    if names and c['name'] not in names:
        continue
    data = None
    gc.collect()   # one condition's frames at a time: no fragmented heap
    with open(setdir + '/' + c['name'] + '.bin', 'rb') as f:
        data = f.read()
    p = 0
    sc = []
    tr = []
    first = True
    while p < len(data):
        n = struct.unpack_from('<I', data, p)[0]
        w8, h8 = ex.extract(memoryview(data)[p + 4:p + 4 + n])
        p += 4 + n
        if det is None or det.w8 != w8 or det.h8 != h8:
            det = Detector(w8, h8, **params)
        if first:
            det.reset()
            first = False
        sc.append(det.feed(ex.luma, w8, h8))
        tr.append(1 if det.triggered else 0)
    out.write(c['name'] + ' ' + ','.join([str(s) for s in sc]) + ' ' + ''.join([str(t) for t in tr]) + '\n')
out.close()
print('done')
'''


def run_vm(setdir, params=None, names=None, timeout=120, heap='2M'):
    """Run extractor + detector on the VM over the set: {name: (scores, triggers)}."""
    with tempfile.TemporaryDirectory() as td:
        drv = os.path.join(td, 'drv.py')
        res = os.path.join(td, 'out')
        with open(drv, 'w') as f:
            f.write(VM_DRIVER)
        cmd = [VM, '-X', 'heapsize=' + heap, drv, setdir, res, json.dumps(params or {})]
        if names:
            with open(os.path.join(td, 'names'), 'w') as f:
                f.write(','.join(names))
            cmd.append(os.path.join(td, 'names'))
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           env=dict(os.environ, MICROPYPATH=ROOT))
        if p.returncode != 0 or p.stdout.strip() != 'done':
            raise RuntimeError('VM failed: %s %s' % (p.stdout[-2000:], p.stderr[-2000:]))
        out = {}
        with open(res) as f:
            for ln in f:
                name, sc, tr = ln.split()
                out[name] = ([int(s) for s in sc.split(',')], [int(t) for t in tr])
    return out


def events(labels):
    """[(first, last)] frame ranges of consecutive motion labels."""
    ev, start = [], None
    for i, l in enumerate(labels + [0]):
        if l and start is None:
            start = i
        elif not l and start is not None:
            ev.append((start, i - 1))
            start = None
    return ev


def score_condition(c, scores, trig, grace=2):
    """Metrics for one condition.
    recall: motion events during which the detector triggered (or within `grace` frames after
    the object vanished); latency: frames from the event's first frame to the trigger;
    false: alarms (rising edges of triggered) starting on quiet frames outside those windows."""
    labels = c['labels']
    ev = events(labels)
    hit, lat = 0, []
    covered = [0] * len(labels)
    for a, b in ev:
        for i in range(a, min(len(labels), b + 1 + grace)):
            covered[i] = 1
        for i in range(a, min(len(labels), b + 1 + grace)):
            if trig[i]:
                hit += 1
                lat.append(i - a)
                break
    false = 0
    for i, t in enumerate(trig):
        if t and (i == 0 or not trig[i - 1]) and not covered[i]:
            false += 1
    return {'name': c['name'], 'kind': c['kind'], 'frames': len(labels), 'events': len(ev),
            'hits': hit, 'recall': hit / len(ev) if ev else None, 'false': false,
            'latency': lat, 'max_score_quiet': max([s for s, l, cv in
                                                    zip(scores, labels, covered) if not cv] or [0])}


def evaluate(setdir=DEFAULT_DIR, params=None, names=None):
    index = ensure(setdir)
    res = run_vm(setdir, params, names)
    return [score_condition(c, *res[c['name']]) for c in index if c['name'] in res]


def main(argv):
    outdir = argv[1] if len(argv) > 1 else DEFAULT_DIR
    idx = ensure(outdir)
    print('motion set: %s: %d conditions, %d frames' % (outdir, len(idx),
                                                        sum(len(c['labels']) for c in idx)))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
