#!/usr/bin/env python3
"""A harder labelled set for the motion detector: real photographs, real cut-outs, the camera's
own behaviour (CPython + numpy + Pillow + scikit-image's bundled photos, no network).

`python tools/sim/motion_set_real.py [OUTDIR]` renders, once (a stamp holds the set's version
and a hash of this file), in the format of tools/sim/motion_set.py (index.json + <name>.bin),
into sim/motion_set_real. Every index entry also has `cover`: the per-mille of the picture the
object covers in each frame (0 on quiet frames).

Backgrounds: scikit-image's `camera`, `coffee`, `brick` and `rocket` photos, cropped to 4:3 and
resized to QVGA. Objects cut from photos with a mask: a person (the `astronaut` photo,
head-and-shoulders mask), an animal (the `horse` silhouette filled with the `chelsea` cat's
fur) and a cup (the `coffee` cup and saucer, elliptic mask).

Motion scenarios `m_<obj>_a<size%>_s<px/frame>_<entry>_<day|dusk>_<bg>`: 10 quiet frames, then
the object enters from the left, right, top or bottom edge, or from the middle (walking out
from behind a pillar at the centre line), at 1, 2, 4 or 8 px per frame, 1, 3, 6 or 12 % of
the picture, and keeps moving for up to 72 frames (and at least until fully in view + 8). The
scenario ends with the object in view: the detector is reset() at each scenario.
Day: light 1.0, sensor noise sigma 2.5; dusk: light 0.4, sigma 6 (the gain amplifies noise).

Quiet scenarios (`q_<what>_<bg>`): noise, held light steps of +-20/40/60 %, ramps, flicker,
sway (the top third moves +-1 px), 1 px shake, auto-exposure overshoot (x2 and x1.6 fading
back over 1, 2, 4, 6, 10 frames; x0.5 undershoot; a lamp that stays on after an overshoot),
white-balance shifts (red/blue gains), the IR-cut filter switching to night (grey, IR look)
and back. Every frame: Gaussian sensor noise on every pixel, then baseline 4:2:0 JPEG at
Pillow quality 25 — re-encoded per frame.
"""
import io
import json
import math
import os
import sys

import numpy as np
from PIL import Image

VERSION = 1
W, H = 320, 240
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_DIR = os.path.join(ROOT, 'sim', 'motion_set_real')
QUALITY = 25
BACKGROUNDS = ('camera', 'coffee', 'brick', 'rocket')
OBJECTS = ('person', 'animal', 'cup')
ENTRIES = ('left', 'right', 'top', 'bottom', 'middle')
SIZES = (1, 3, 6, 12)
SPEEDS = (1, 2, 4, 8)
DAY = (1.0, 2.5)     # light, noise sigma
DUSK = (0.4, 6.0)
LEAD = 10
MAX_MOTION = 72

_cache = {}


def _data(name):
    import skimage.data
    return getattr(skimage.data, name)()


def _fit(a, w, h, extra=2):
    """Centre-crop a photo to w:h and resize to (w + 2*extra) x (h + 2*extra): the margin
    lets the shake scenarios move the view by a pixel."""
    if a.ndim == 2:
        a = np.stack([a] * 3, -1)
    ih, iw = a.shape[:2]
    if iw * h > ih * w:
        cw = ih * w // h
        a = a[:, (iw - cw) // 2:(iw - cw) // 2 + cw]
    else:
        ch = iw * h // w
        a = a[(ih - ch) // 2:(ih - ch) // 2 + ch]
    img = Image.fromarray(np.ascontiguousarray(a[..., :3])).resize((w + 2 * extra, h + 2 * extra),
                                                                    Image.LANCZOS)
    return np.asarray(img, dtype=np.float32)


def background(name):
    key = ('bg', name)
    if key not in _cache:
        _cache[key] = _fit(_data(name), W, H)
    return _cache[key]


def _cutout(name):
    """(rgb float32, mask bool) of an object cut from a photo."""
    key = ('obj', name)
    if key in _cache:
        return _cache[key]
    if name == 'person':
        a = _data('astronaut')[:, :380].astype(np.float32)
        yy, xx = np.mgrid[:a.shape[0], :a.shape[1]]
        head = ((xx - 227) / 72.0) ** 2 + ((yy - 85) / 85.0) ** 2 <= 1
        body = (yy >= 150) & (xx >= 25 + np.maximum(0, 200 - yy) * 0.5) & \
               (xx <= 365 - np.maximum(0, 200 - yy) * 0.5)
        m = head | body
    elif name == 'animal':
        horse = ~_data('horse')                     # True on the horse
        fur = _data('chelsea')                      # a cat's fur and face
        img = Image.fromarray(fur).resize((horse.shape[1], horse.shape[0]), Image.LANCZOS)
        a = np.asarray(img, dtype=np.float32)
        m = horse
    else:  # cup
        a = _data('coffee').astype(np.float32)
        yy, xx = np.mgrid[:a.shape[0], :a.shape[1]]
        m = ((xx - 282) / 205.0) ** 2 + ((yy - 212) / 178.0) ** 2 <= 1
    ys, xs = np.nonzero(m)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    _cache[key] = (a[y0:y1, x0:x1], m[y0:y1, x0:x1])
    return _cache[key]


def cutout(name, area_pct):
    """The object scaled so that its mask covers area_pct % of the QVGA picture."""
    key = ('cut', name, area_pct)
    if key in _cache:
        return _cache[key]
    a, m = _cutout(name)
    frac = m.mean()
    target = area_pct / 100.0 * W * H
    s = math.sqrt(target / (frac * m.shape[0] * m.shape[1]))
    ow, oh = max(2, round(m.shape[1] * s)), max(2, round(m.shape[0] * s))
    rgb = np.asarray(Image.fromarray(a.astype(np.uint8)).resize((ow, oh), Image.LANCZOS),
                     dtype=np.float32)
    mk = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((ow, oh), Image.BILINEAR)) >= 128
    _cache[key] = (rgb, mk)
    return rgb, mk


def paste(frame, rgb, mk, x, y, clip_x=None):
    """Paste the object with its top-left corner at (x, y) into frame (H x W x 3, in place);
    clip_x: only the part right of that column is visible (behind a pillar). Returns the
    number of visible object pixels."""
    oh, ow = mk.shape
    fx0, fy0 = max(0, x), max(0, y)
    fx1, fy1 = min(W, x + ow), min(H, y + oh)
    if clip_x is not None:
        fx0 = max(fx0, clip_x)
    if fx1 <= fx0 or fy1 <= fy0:
        return 0
    sub = mk[fy0 - y:fy1 - y, fx0 - x:fx1 - x]
    reg = frame[fy0:fy1, fx0:fx1]
    reg[sub] = rgb[fy0 - y:fy1 - y, fx0 - x:fx1 - x][sub]
    return int(sub.sum())


def finish(scene, light=1.0, sigma=2.5, rng=None, wb=None, night=False, quality=QUALITY):
    """Camera: white balance, IR-cut, exposure (light), sensor noise, JPEG."""
    f = scene
    if night:
        # IR-cut filter out: no colour; foliage and skin brighter in IR, blue darker
        g = 0.55 * f[..., 0] + 0.35 * f[..., 1] + 0.10 * f[..., 2]
        f = np.stack([g, g, g], -1)
    if wb is not None:
        f = f * np.asarray(wb, dtype=np.float32)
    if light != 1.0:
        f = f * light
    if sigma:
        f = f + rng.normal(0.0, sigma, f.shape[:2]).astype(np.float32)[..., None]
    img = Image.fromarray(np.clip(f + 0.5, 0, 255).astype(np.uint8))
    b = io.BytesIO()
    img.save(b, 'JPEG', quality=quality, subsampling=2)
    return b.getvalue()


def _view(bg, dx=0, dy=0):
    return bg[2 + dy:2 + dy + H, 2 + dx:2 + dx + W].copy()


def _cond(name, kind, frames, labels, cover, **meta):
    d = dict(name=name, kind=kind, labels=labels, cover=cover, area=None, speed=None,
             quality=QUALITY)
    d.update(meta)
    d['frames'] = frames
    return d


_ONLY = []  # conditions(only=...): the names to render, the others are skipped


def _skip(name):
    return bool(_ONLY) and name not in _ONLY[0]


def motion(obj, size, speed, entry, dusk, bgname, seed):
    name = 'm_%s_a%d_s%d_%s_%s_%s' % (obj, size, speed, entry, 'dusk' if dusk else 'day', bgname)
    if _skip(name):
        return None
    rng = np.random.default_rng(seed)
    light, sigma = DUSK if dusk else DAY
    bg = background(bgname)
    rgb, mk = cutout(obj, size)
    oh, ow = mk.shape
    frames, labels, cover = [], [], []
    for k in range(LEAD):
        frames.append(finish(_view(bg), light, sigma, rng))
        labels.append(0)
        cover.append(0)
    # the path: start just outside (or behind the pillar), move inward
    r = np.random.default_rng(seed + 1)
    clip = None
    if entry in ('left', 'right'):
        y = int(r.integers(0, max(1, H - oh + 1))) if oh < H else (H - oh) // 2
        x0 = -ow if entry == 'left' else W
        step = (speed, 0) if entry == 'left' else (-speed, 0)
        pos = [x0, y]
        travel = ow
    elif entry in ('top', 'bottom'):
        x = int(r.integers(0, max(1, W - ow + 1))) if ow < W else (W - ow) // 2
        y0 = -oh if entry == 'top' else H
        step = (0, speed) if entry == 'top' else (0, -speed)
        pos = [x, y0]
        travel = oh
    else:  # middle: out from behind a pillar at the centre line, walking right
        y = int(r.integers(0, max(1, H - oh + 1))) if oh < H else (H - oh) // 2
        clip = W // 2
        pos = [clip - ow, y]
        step = (speed, 0)
        travel = ow
    n = min(MAX_MOTION, max(travel // speed + 8, 16))
    n = min(n, max(16, (W // 2 if clip else (W if step[0] else H)) // speed))
    for k in range(n):
        pos[0] += step[0]
        pos[1] += step[1]
        fr = _view(bg)
        if clip is not None:
            # the pillar hides the part left of the centre line; the object walks right
            px = paste(fr, rgb, mk, pos[0], pos[1], clip_x=clip)
        else:
            px = paste(fr, rgb, mk, pos[0], pos[1])
        frames.append(finish(fr, light, sigma, rng))
        labels.append(1 if px else 0)
        cover.append(round(px * 1000 / (W * H)))
    return _cond(name, 'motion', frames, labels, cover, area=size, speed=speed, entry=entry,
                 obj=obj, dusk=dusk, bg=bgname)


def quiet(name, bgname, n, light=None, dusk=False, seed=0, shake=False, sway=False, wb=None,
          night=None):
    """n frames without motion; light/wb/night: per-frame lists (or None)."""
    if _skip('q_%s_%s' % (name, bgname)):
        return None
    rng = np.random.default_rng(seed)
    r2 = np.random.default_rng(seed + 7)
    bl, sigma = DUSK if dusk else DAY
    bg = background(bgname)
    frames = []
    for k in range(n):
        if shake:
            fr = _view(bg, int(r2.integers(-1, 2)), int(r2.integers(-1, 2)))
        else:
            fr = _view(bg)
        if sway:
            # branches in the wind: the top third sways by up to a pixel
            dx = round(math.sin(k * 2 * math.pi / 6))
            top = H // 3
            fr[:top] = bg[2:2 + top, 2 + dx:2 + dx + W]
        lk = (light[k] if light else 1.0) * bl
        frames.append(finish(fr, lk, sigma, rng, wb=wb[k] if wb else None,
                             night=night[k] if night else False))
    return _cond('q_%s_%s' % (name, bgname), 'quiet', frames, [0] * n, [0] * n, bg=bgname,
                 dusk=dusk)


def _overshoot(peak, frames, settle=1.0, lead=10, tail=16):
    """Auto-exposure: a jump to `peak` x the brightness that fades to `settle` over
    `frames` frames."""
    seq = [1.0] * lead
    for k in range(frames):
        seq.append(peak + (settle - peak) * k / frames)
    return seq + [settle] * tail


def conditions(only=None):
    """The whole set, or only the scenarios named in `only` (the same frames)."""
    _ONLY[:] = [set(only)] if only else []
    try:
        return [c for c in _conditions() if c is not None]
    finally:
        _ONLY[:] = []


def _conditions():
    out = []
    seed = 100
    i = 0
    for dusk in (False, True):
        for size in SIZES:
            for speed in SPEEDS:
                for v in range(3):
                    obj = OBJECTS[(i + v) % 3]
                    entry = ENTRIES[(i * 2 + v) % 5]
                    bgname = BACKGROUNDS[(i + 2 * v) % 4]
                    out.append(motion(obj, size, speed, entry, dusk, bgname, seed))
                    seed += 11
                i += 1
    for j, bgname in enumerate(BACKGROUNDS):
        s = 5000 + 100 * j
        out.append(quiet('noise', bgname, 40, seed=s))
        out.append(quiet('dusk_noise', bgname, 40, dusk=True, seed=s + 1))
        for pct in (20, 40, 60):
            for sign in (1, -1):
                l = 1 + sign * pct / 100.0
                out.append(quiet('step%+d' % (sign * pct), bgname, 30,
                                 [1.0] * 8 + [l] * 14 + [1.0] * 8, seed=s + 2 + pct + sign))
        out.append(quiet('ramp_down', bgname, 50, [1.0 - 0.5 * k / 50 for k in range(50)],
                         seed=s + 70))
        out.append(quiet('ramp_up', bgname, 50, [0.7 + 0.4 * k / 50 for k in range(50)],
                         seed=s + 71))
        out.append(quiet('flicker', bgname, 30, [1.0 - 0.1 * (k % 2) for k in range(30)],
                         seed=s + 72))
        out.append(quiet('sway', bgname, 30, seed=s + 73, sway=True))
        out.append(quiet('shake', bgname, 30, seed=s + 74, shake=True))
        for nf in (1, 2, 4, 6, 10):
            seq = _overshoot(2.0, nf)
            out.append(quiet('ae_x2_%d' % nf, bgname, len(seq), seq, seed=s + 80 + nf))
        for nf in (2, 6):
            seq = _overshoot(1.6, nf)
            out.append(quiet('ae_x1.6_%d' % nf, bgname, len(seq), seq, seed=s + 90 + nf))
            seq = _overshoot(0.5, nf)
            out.append(quiet('ae_x0.5_%d' % nf, bgname, len(seq), seq, seed=s + 95 + nf))
        seq = _overshoot(2.0, 4, settle=1.3)
        out.append(quiet('ae_lamp_on', bgname, len(seq), seq, seed=s + 99))
        seq = _overshoot(2.0, 3)
        out.append(quiet('ae_dusk_x2_3', bgname, len(seq), seq, dusk=True, seed=s + 98))
        for wname, wb in (('wb_warm', (1.15, 1.0, 0.8)), ('wb_cool', (0.85, 1.0, 1.2))):
            seq = [None] * 8 + [wb] * 14 + [None] * 8
            out.append(quiet(wname, bgname, 30, wb=seq, seed=s + 60 + len(wname)))
        night = [False] * 8 + [True] * 14 + [False] * 8
        out.append(quiet('ircut', bgname, 30, [1.0] * 8 + [1.2] * 14 + [1.0] * 8, dusk=False,
                         night=night, seed=s + 65))
    return out


def write_set(outdir, conds=None):
    from sim import motion_set  # the same files as the old set
    return motion_set.write_set(outdir, conditions() if conds is None else conds, _stamp())


def _stamp():
    import hashlib

    import skimage
    h = hashlib.sha1()
    with open(__file__, 'rb') as f:
        h.update(f.read())
    return '%d %s %s' % (VERSION, skimage.__version__, h.hexdigest()[:16])


def ensure(outdir=DEFAULT_DIR):
    """Render the set into outdir unless an up-to-date copy is there; return the index."""
    from sim import motion_set
    return motion_set.ensure_set(outdir, _stamp(), write_set)


# ---------------------------------------------------------------- metrics
def score_condition(c, scores, trig, grace=2):
    """Metrics of one scenario. Motion: hit (triggered while the object was in view or within
    `grace` frames after), frames from the first pixel to the alarm (`from_first`), and from
    the first frame the object covers >= 1.5 % of the picture (`from_15`; None when it never
    does); quiet: false alarms = rising edges of triggered."""
    labels, cover = c['labels'], c['cover']
    m = {'name': c['name'], 'kind': c['kind'], 'frames': len(labels),
         'peak': max(scores) if scores else 0, 'false': 0, 'hit': None,
         'from_first': None, 'from_15': None}
    if c['kind'] == 'quiet':
        m['false'] = sum(1 for i, t in enumerate(trig) if t and (i == 0 or not trig[i - 1]))
        return m
    first = labels.index(1)
    at15 = next((i for i, v in enumerate(cover) if v >= 15), None)
    alarm = next((i for i in range(first, len(trig)) if trig[i]), None)
    m['hit'] = alarm is not None
    m['false'] = sum(1 for i in range(first) if trig[i] and (i == 0 or not trig[i - 1]))
    if alarm is not None:
        m['from_first'] = alarm - first
        if at15 is not None:
            m['from_15'] = max(0, alarm - at15)
    m['at15'] = None if at15 is None else at15 - first
    return m


def evaluate(setdir=DEFAULT_DIR, params=None, names=None):
    from sim import motion_set
    index = ensure(setdir)
    res = motion_set.run_vm(setdir, params, names, timeout=600, heap='8M')
    return [(c, score_condition(c, *res[c['name']])) for c in index if c['name'] in res]


def summarize(res):
    """The goal figures of evaluate()'s results: a dict of lists and counts."""
    mo = [(c, m) for c, m in res if c['kind'] == 'motion']
    big = [(c, m) for c, m in mo if c['area'] >= 3]
    out = {
        'big_hits': sum(1 for c, m in big if m['hit']), 'big': len(big),
        'big_missed': [c['name'] for c, m in big if not m['hit']],
        'small_hits': sum(1 for c, m in mo if c['area'] < 3 and m['hit']),
        'small': sum(1 for c, m in mo if c['area'] < 3),
        # from 1.5 % coverage: every object that reaches it
        'from_15': sorted(m['from_15'] for c, m in mo if m['from_15'] is not None),
        'late_15': [(c['name'], m['from_15']) for c, m in mo
                    if m['from_15'] is not None and m['from_15'] > 3],
        'fast_first': sorted(m['from_first'] for c, m in big
                             if c['speed'] >= 4 and m['from_first'] is not None),
        'late_fast': [(c['name'], m['from_first']) for c, m in big
                      if c['speed'] >= 4 and m['from_first'] is not None and m['from_first'] > 5],
        'false': sum(m['false'] for c, m in res),
        'false_names': [(c['name'], m['false']) for c, m in res if m['false']],
        'quiet_frames': sum(m['frames'] for c, m in res if c['kind'] == 'quiet'),
        'quiet_peak': max([m['peak'] for c, m in res if c['kind'] == 'quiet'] or [0]),
    }
    return out


def main(argv):
    import time
    t = time.time()
    outdir = argv[1] if len(argv) > 1 else DEFAULT_DIR
    idx = ensure(outdir)
    print('real motion set: %s: %d scenarios, %d frames (%.1f s)' % (
        outdir, len(idx), sum(len(c['labels']) for c in idx), time.time() - t))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
