# Motion detector on the 1/8-scale luma thumbnail (firmware/jpeg_luma.py).
#
# One cell = one 8x8 block of the frame (40x30 cells at QVGA). Per frame:
#  1. global gain: median of cur/background over the cells (a histogram, no
#     sort). Light switches, clouds, flicker and auto-exposure scale the whole
#     picture (the sensor's gamma keeps a multiplicative change multiplicative),
#     so the background is rescaled by that gain before comparing.
#  2. a cell is changed when |cur - gain*bg| exceeds its threshold:
#     k * (learned per-cell noise) + floor + a small fraction of the level.
#  3. isolated changed cells (no changed 8-neighbour) are ignored (JPEG
#     quantization flips single blocks); score = changed area in per-mille.
#  4. if most cells changed in the same direction anyway (a change the gain
#     model could not explain), the background is re-baselined instead.
#  5. the background follows the scene: fast where nothing changed, slowly
#     where something did (a parked object fades into the background).
# A trigger needs min_frames consecutive frames with score >= area.
# All state is preallocated; feed() allocates nothing. Integer arithmetic only.
import micropython
from micropython import const
from array import array

_HB = const(512)  # gain histogram bins: ratio x 256, 0 .. 2

# sensitivity 1..10 -> (area per-mille, k x 8, floor in grey levels)
_SENS = (
    (50, 48, 14),
    (40, 44, 12),
    (30, 40, 11),
    (22, 36, 10),
    (15, 32, 8),
    (12, 28, 7),
    (9, 26, 6),
    (7, 24, 5),
    (5, 20, 5),
    (3, 16, 4),
)


@micropython.viper
def _fill(b: ptr8, n: int, v: int):
    i = int(0)
    while i < n:
        b[i] = v
        i += 1


@micropython.viper
def _fill16(b: ptr16, n: int, v: int):
    i = int(0)
    while i < n:
        b[i] = v
        i += 1


@micropython.viper
def _gain(cur: ptr8, bg: ptr16, act: ptr8, chg: ptr8, n: int, hist: ptr16) -> int:
    # median of cur*256/bg over active, well-lit cells that were background in
    # the previous frame (chg == 0); 256 = no change
    i = int(0)
    while i < 512:
        hist[i] = 0
        i += 1
    cnt = int(0)
    na = int(0)
    i = 0
    while i < n:
        if act[i]:
            na += 1
            b = int(bg[i])
            if b >= 384 and b < 3968 and chg[i] == 0:  # 24 .. 248 grey levels (x16)
                r = (int(cur[i]) * 4096 + (b >> 1)) // b
                if r > 511:
                    r = 511
                hist[r] += 1
                cnt += 1
        i += 1
    if cnt * 4 < na or cnt == 0:
        return 256
    half = cnt >> 1
    acc = int(0)
    r = 0
    while r < 512:
        acc += int(hist[r])
        if acc > half:
            return r
        r += 1
    return 511


@micropython.viper
def _despeckle(chg: ptr8, w: int, h: int) -> int:
    # count changed cells with at least one changed 8-neighbour; mark them 4|
    cnt = int(0)
    y = int(0)
    while y < h:
        x = int(0)
        row = y * w
        while x < w:
            i = row + x
            if chg[i] & 3:
                ok = 0
                y0 = y - 1
                if y0 < 0:
                    y0 = 0
                y1 = y + 1
                if y1 >= h:
                    y1 = h - 1
                x0 = x - 1
                if x0 < 0:
                    x0 = 0
                x1 = x + 1
                if x1 >= w:
                    x1 = w - 1
                yy = y0
                while yy <= y1 and not ok:
                    xx = x0
                    while xx <= x1:
                        j = yy * w + xx
                        if j != i and (chg[j] & 3):
                            ok = 1
                            break
                        xx += 1
                    yy += 1
                if ok:
                    chg[i] = chg[i] | 4
                    cnt += 1
            x += 1
        y += 1
    return cnt


@micropython.viper
def _step(cur: ptr8, bg: ptr16, dev: ptr16, act: ptr8, chg: ptr8, age: ptr8, n: int,
          par: ptr32):
    # Classify every active cell against the gain-scaled background and update
    # the background and the per-cell noise in the same pass.
    # par in:  0 gain (x256), 1 k (x8), 2 floor (x16), 3 rel (x256), 4 min dev (x16),
    #          9 fast shift, 10 slow shift (0 = frozen), 11 dev shift, 12 dev cap (x16),
    #          14 frames after which a cell that stays changed is absorbed fast
    #          (a parked object, a false change)
    # par out: 5 changed, 6 cells brighter than bg before the gain (raw), 7 darker,
    #          8 active cells
    # chg: 0 background, 1 brighter, 2 darker, 8 unknown (was saturated)
    g = int(par[0])
    k8 = int(par[1])
    fl = int(par[2])
    rel = int(par[3])
    dmin = int(par[4])
    fs = int(par[9])
    ss = int(par[10])
    ds = int(par[11])
    cap = int(par[12])
    absorb = int(par[14])
    fr = (1 << fs) >> 1
    sr = (1 << ss) >> 1
    nc = int(0)
    npos = int(0)
    nneg = int(0)
    na = int(0)
    i = int(0)
    while i < n:
        chg[i] = 0
        if act[i]:
            na += 1
            b = int(bg[i])
            c = int(cur[i]) << 4
            e = (b * g + 128) >> 8
            if e > 4080:
                e = 4080
            d = c - e
            if d > 0 and g < 256 and b >= 3840:
                # the background was (nearly) saturated: its true level is
                # unknown, so a darker scene tells nothing; take cur as is
                chg[i] = 8
                bg[i] = c
                age[i] = 0
                i += 1
                continue
            ad = d
            if d < 0:
                ad = -d
            dv = int(dev[i])
            if dv < dmin:
                dv = dmin
            thr = ((dv * k8) >> 3) + fl + ((e * rel) >> 8)
            # the raw change (before the gain) for the global-change test
            r = c - b
            if r > thr:
                npos += 1
            elif r < -thr:
                nneg += 1
            if ad > thr:
                nc += 1
                if d > 0:
                    chg[i] = 1
                else:
                    chg[i] = 2
                a = int(age[i])
                if a < 255:
                    age[i] = a + 1
                if a >= absorb:
                    e += (d + fr) >> fs
                elif ss != 0:
                    e += (d + sr) >> ss
            else:
                age[i] = 0
                e += (d + fr) >> fs
                if ad > cap:
                    ad = cap
                dv = int(dev[i])
                dv += (ad - dv) >> ds
                if dv < 0:
                    dv = 0
                dev[i] = dv
            if e < 0:
                e = 0
            elif e > 4080:
                e = 4080
            bg[i] = e
        i += 1
    par[5] = nc
    par[6] = npos
    par[7] = nneg
    par[8] = na


@micropython.viper
def _rebase(cur: ptr8, bg: ptr16, age: ptr8, chg: ptr8, n: int):
    # background = this frame (first frame, global change)
    i = int(0)
    while i < n:
        bg[i] = int(cur[i]) << 4
        age[i] = 0
        chg[i] = 0
        i += 1


class Detector:
    """Block-difference motion detector on luma thumbnails.

    Detector(w8, h8, sensitivity=5, mask=None, min_frames=2, area=None,
             noise=None, light_fraction=0.5, warmup=3)
      sensitivity  1 (least) .. 10 (most): area and threshold presets
      mask         ignored cells: bytearray/bytes of w8*h8 (nonzero = ignore),
                   a list of cell indices, or of (x0, y0, x1, y1) rectangles in
                   thumbnail cells (x1, y1 exclusive)
      min_frames   consecutive frames over the area threshold for a trigger
      area         area threshold in per-mille of the active cells (overrides
                   the sensitivity preset)
      noise        fixed noise floor in grey levels (default: learned per cell)
      light_fraction  when more than this fraction of cells changed, mostly in
                   one direction, the change is global: re-baseline, no alarm
      warmup       frames after reset() used to learn, never alarming
    feed(luma, w8, h8) -> score (changed area, per-mille); self.triggered
    """

    def __init__(self, w8, h8, sensitivity=5, mask=None, min_frames=2, area=None,
                 noise=None, light_fraction=0.5, warmup=3, rel=8, fast_shift=2,
                 slow_shift=0, absorb=20):
        n = w8 * h8
        if n <= 0:
            raise ValueError("empty thumbnail")
        self.w8 = w8
        self.h8 = h8
        self.n = n
        self._bg = array("H", bytes(2 * n))
        self._dev = array("H", bytes(2 * n))
        self._act = bytearray(n)
        self._chg = bytearray(n)
        self._age = bytearray(n)
        self._hist = array("H", bytes(2 * _HB))
        self._par = array("i", bytes(4 * 16))
        self.min_frames = max(1, int(min_frames))
        self.warmup = max(1, int(warmup))
        self.light_pm = int(light_fraction * 1000)
        self.rel = rel
        self.fast_shift = fast_shift
        self.slow_shift = slow_shift
        self.absorb = absorb
        self._area_override = area
        self._noise = noise
        self.set_sensitivity(sensitivity)
        self.set_mask(mask)
        self.reset()

    # ---- configuration ----
    def set_sensitivity(self, s):
        s = int(s)
        if s < 1:
            s = 1
        elif s > 10:
            s = 10
        self.sensitivity = s
        a, k8, fl = _SENS[s - 1]
        self.area = int(self._area_override) if self._area_override is not None else a
        self.k8 = k8
        if self._noise is not None:
            fl = self._noise
        self.floor = fl

    def set_mask(self, mask):
        act = self._act
        n = self.n
        for i in range(n):
            act[i] = 1
        if mask is None:
            pass
        elif isinstance(mask, (bytes, bytearray)):
            if len(mask) != n:
                raise ValueError("mask must have w8*h8 = %d cells" % n)
            for i in range(n):
                if mask[i]:
                    act[i] = 0
        else:
            for m in mask:
                if isinstance(m, int):
                    if 0 <= m < n:
                        act[m] = 0
                else:
                    x0, y0, x1, y1 = m
                    for y in range(max(0, y0), min(self.h8, y1)):
                        for x in range(max(0, x0), min(self.w8, x1)):
                            act[y * self.w8 + x] = 0
        self.active = sum(act)
        if self.active == 0:
            raise ValueError("mask ignores every cell")

    def reset(self):
        """Forget the background: call after arming or a camera restart.
        The next `warmup` frames only learn, never trigger."""
        self.frames = 0
        self.run = 0
        self.score = 0
        self.triggered = False
        self.gain = 256
        self.global_change = False
        self.rebaselines = 0

    def describe(self):
        return {
            "cells": "%dx%d" % (self.w8, self.h8),
            "active": self.active,
            "sensitivity": self.sensitivity,
            "area_pm": self.area,
            "min_frames": self.min_frames,
            "noise_floor": self.floor,
            "k": self.k8 / 8,
            "light_fraction": self.light_pm / 1000,
            "warmup": self.warmup,
        }

    # ---- per frame ----
    def feed(self, luma, w8, h8):
        """One thumbnail -> score (changed area, per-mille of active cells).
        self.triggered: min_frames consecutive frames reached the area."""
        if w8 != self.w8 or h8 != self.h8:
            raise ValueError("thumbnail %dx%d, detector built for %dx%d" % (w8, h8, self.w8, self.h8))
        par = self._par
        n = self.n
        f = self.frames
        self.frames = f + 1
        self.triggered = False
        self.global_change = False
        if f == 0:
            # first frame after reset: it is the background
            _rebase(luma, self._bg, self._age, self._chg, n)
            _fill16(self._dev, n, 16)
            self.run = 0
            self.score = 0
            return 0
        learning = f < self.warmup
        g = _gain(luma, self._bg, self._act, self._chg, n, self._hist)
        if -1 <= g - 256 <= 1:
            g = 256  # dead band: no drift from the median's rounding
        self.gain = g
        par[0] = g
        par[1] = self.k8
        par[2] = self.floor * 16
        par[3] = self.rel
        par[4] = 16
        par[9] = 1 if learning else self.fast_shift
        par[10] = 1 if learning else self.slow_shift
        par[11] = 1 if learning else 4
        par[12] = 16 * 16
        par[14] = self.absorb
        _step(luma, self._bg, self._dev, self._act, self._chg, self._age, n, par)
        nc = par[5]
        na = par[8]
        score = 0
        if nc:
            score = _despeckle(self._chg, self.w8, self.h8) * 1000 // na
            if max(par[6], par[7]) * 1000 > self.light_pm * na:
                # most cells moved the same way, and the gain did not explain
                # it: a global change -> re-baseline, no alarm
                _rebase(luma, self._bg, self._age, self._chg, n)
                self.global_change = True
                self.rebaselines += 1
                score = 0
        if learning:
            score = 0
        self.score = score
        if score >= self.area and score > 0:
            self.run += 1
        else:
            self.run = 0
        self.triggered = self.run >= self.min_frames
        return score
