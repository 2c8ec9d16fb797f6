# Motion detector on the 1/8-scale luma thumbnail (firmware/alarm/luma.py).
#
# One cell = one 8x8 block of the frame (40x30 cells at QVGA). Per frame:
#  1. global gain: median of cur/background over the cells. Light switches,
#     clouds, flicker and auto-exposure scale the whole picture (the sensor's
#     gamma keeps a multiplicative change multiplicative), so the background is
#     rescaled by that gain before comparing. A first pass only counts the cells
#     below and above the dead band (table thresholds, no division); the
#     histogram of the ratio (no sort) is built only when the median is outside.
#  2. a cell is changed when |cur - gain*bg| exceeds its threshold:
#     k * (learned per-cell noise) + floor + a small fraction of the level.
#  3. isolated changed cells (no changed 8-neighbour) are ignored (JPEG
#     quantization flips single blocks); score = changed area in per-mille.
#  4. if most cells changed in the same direction anyway (a change the gain
#     model could not explain), the background is re-baselined instead.
#  5. the background follows the scene: fast where nothing changed, slowly
#     near the threshold (a creeping edge), not where something changed until
#     it has stayed still for `absorb` frames (a parked object).
#  A gain change beyond 8 % is held (no update, no score) until the gain returns
#  (auto-exposure overshoot) or holds still at a new level (then re-baseline).
#  At dusk (a dark background) the floor and k are lower.
# A trigger needs min_frames consecutive frames with score >= area.
# All state is preallocated; feed() allocates nothing. Integer arithmetic only.
from array import array

import micropython
from micropython import const

_HB = const(512)  # gain histogram bins: ratio x 256, 0 .. 2
_BIG = const(20)  # a gain beyond 256 +- this (8 %) is an exposure change: see feed()

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
def _gtest(i: int, b: int, cur: ptr8, bg: ptr16, chg: ptr8, sp: ptr16, ns: int, glo: ptr16,
           ghi: ptr16, par: ptr32):
    # Is the median of r = (cur*4096 + bg/2) // bg within the dead band 255..257?
    # Counts, among the active, well-lit cells that were background in the previous
    # frame, those with r <= 254 (lo) and r >= 258 (hi), without a division:
    # r <= 254 <=> bg > glo[cur]; r >= 258 <=> bg <= ghi[cur] (_gain_tables).
    # A median needs no census: the cells of even index are looked at (par[8]: how many).
    lo = 0
    hi = 0
    out = 0
    n = 0
    lv = 0
    s = 0
    while s < ns:
        i = ((int(sp[s]) + 1) >> 1) << 1
        end = int(sp[s + 1])
        s += 2
        while i < end:
            n += 1
            b = int(bg[i])
            lv += b
            if uint(b - 384) >= uint(3584):   # 24 .. 248 grey levels (x16) only
                out += 1
            elif chg[i]:
                out += 1
            else:
                c = int(cur[i])
                if b > int(glo[c]):
                    lo += 1
                elif b <= int(ghi[c]):
                    hi += 1
            i += 2
    par[5] = out
    par[6] = lo
    par[7] = hi
    par[8] = n
    par[12] = lv


@micropython.viper
def _gain(i: int, b: int, cur: ptr8, bg: ptr16, chg: ptr8, sp: ptr16, ns: int, hist: ptr16) -> int:
    # median of cur*256/bg over the active, well-lit, unclipped cells of even index
    # (the ones _gtest looks at) that were background
    # in the previous frame (chg == 0); 256 = no change. Only run when _gtest
    # found the median outside the dead band (a light change).
    i = 0
    while i < 512:
        hist[i] = 0
        i += 1
    cnt = 0
    s = 0
    while s < ns:
        i = ((int(sp[s]) + 1) >> 1) << 1   # the cells _gtest looks at
        end = int(sp[s + 1])
        s += 2
        while i < end:
            b = int(bg[i])
            c = int(cur[i])
            # clipped cells (cur >= 248) would pull the median of an overshoot down
            if uint(b - 384) < uint(3584) and chg[i] == 0 and c < 248:
                r = ((c << 12) + (b >> 1)) // b
                if r > 511:
                    r = 511
                hist[r] += 1
                cnt += 1
            i += 2
    half = cnt >> 1
    acc = 0
    r = 0
    while r < 512:
        acc += int(hist[r])
        if acc > half:
            return r
        r += 1
    return 511


@micropython.viper
def _step1(i: int, b: int, cur: ptr8, bg: ptr16, dev: ptr8, chg: ptr8, age: ptr8,
           ref: ptr8, sp: ptr16, ns: int, th: ptr16, par: ptr32):
    # _stepg for the gain 256 (the steady state): the gain-scaled background is
    # the background, the raw change is the change, no cell can be 'unknown'.
    fs = int(par[9])
    ss = int(par[10])
    ds = int(par[11])
    absorb = int(par[14])
    fr = (1 << fs) >> 1
    sr = (1 << ss) >> 1
    npos = 0
    nneg = 0
    s = 0
    while s < ns:
        i = int(sp[s])
        end = int(sp[s + 1])
        s += 2
        while i < end:
            b = int(bg[i])
            d = (int(cur[i]) << 4) - b
            dv = int(dev[i])
            ad = d
            if d < 0:
                ad = 0 - d
            thr = int(th[dv]) + int(th[256 + (b >> 4)])
            if ad > thr:
                if d > 0:
                    npos += 1
                    q = 1
                else:
                    nneg += 1
                    q = 2
                a = 0
                v = int(cur[i])
                p = int(chg[i]) & 3
                if p:
                    a = int(age[i])
                    rd = v - int(ref[i])
                    if rd < 0:
                        rd = 0 - rd
                    if (rd << 5) > thr:
                        # the cell keeps changing: something moving, not parked
                        a = 0
                        ref[i] = v
                else:
                    ref[i] = v
                chg[i] = q
                if a < 255:
                    age[i] = a + 1
                if a >= absorb:
                    bg[i] = b + ((d + fr) >> fs)
                elif ss != 0:
                    bg[i] = b + ((d + sr) >> ss)
            else:
                if ad + ad <= thr:
                    chg[i] = 0
                    bg[i] = b + ((d + fr) >> fs)
                    dev[i] = dv + ((ad - dv) >> ds)
                else:
                    # over half the threshold: maybe the edge of a slow object,
                    # the background follows it only slowly. The noise learns
                    # from it unless it was over half on the same side before (a
                    # creeping edge, not a swing as in shake or flicker).
                    h = 32
                    if d > 0:
                        h = 16
                    p = int(chg[i]) & 48
                    chg[i] = h
                    bg[i] = b + ((d + 8) >> 4)
                    if p != h:
                        dev[i] = dv + ((ad - dv) >> ds)
            i += 1
    par[5] = npos + nneg
    par[6] = npos
    par[7] = nneg


@micropython.viper
def _stepg(i: int, d: int, cur: ptr8, bg: ptr16, dev: ptr8, chg: ptr8, age: ptr8,
           ref: ptr8, sp: ptr16, ns: int, th: ptr16, par: ptr32):
    # Classify every active cell against the gain-scaled background and update
    # the background and the per-cell noise in the same pass.
    # th[dev]: k * max(dev, min dev) + floor (x16); dev < 256 (the cap, 16 grey levels)
    # par in:  0 gain (x256), 9 fast shift, 10 slow shift (0 = frozen),
    #          11 dev shift, 14 frames after which a cell that stays changed is
    #          absorbed fast (a parked object, a false change)
    # par out: 5 changed, 6 cells brighter than bg before the gain (raw), 7 darker
    # chg: 0 background, 1 brighter, 2 darker, 8 unknown (was saturated)
    # age: frames the cell has stayed changed; valid only where chg & 3 (the
    # background cells never write it)
    g = int(par[0])
    fs = int(par[9])
    ss = int(par[10])
    ds = int(par[11])
    absorb = int(par[14])
    fr = (1 << fs) >> 1
    sr = (1 << ss) >> 1
    nc = 0
    npos = 0
    nneg = 0
    s = 0
    while s < ns:
        i = int(sp[s])
        end = int(sp[s + 1])
        s += 2
        while i < end:
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
                i += 1
                continue
            ad = d
            if d < 0:
                ad = 0 - d
            dv = int(dev[i])
            thr = int(th[dv]) + int(th[256 + (e >> 4)])
            # the raw change (before the gain) for the global-change test
            r = c - b
            if r > thr:
                npos += 1
            elif r < 0 - thr:
                nneg += 1
            if ad > thr:
                nc += 1
                q = 2
                if d > 0:
                    q = 1
                a = 0
                v = int(cur[i])
                p = int(chg[i]) & 3
                if p:
                    a = int(age[i])
                    rd = v - int(ref[i])
                    if rd < 0:
                        rd = 0 - rd
                    if (rd << 5) > thr:
                        # the cell keeps changing: something moving, not parked
                        a = 0
                        ref[i] = v
                else:
                    ref[i] = v
                chg[i] = q
                if a < 255:
                    age[i] = a + 1
                if a >= absorb:
                    e += (d + fr) >> fs
                elif ss != 0:
                    e += (d + sr) >> ss
            else:
                if ad + ad <= thr:
                    chg[i] = 0
                    e += (d + fr) >> fs
                    dev[i] = dv + ((ad - dv) >> ds)
                else:
                    h = 32
                    if d > 0:
                        h = 16
                    p = int(chg[i]) & 48
                    chg[i] = h
                    e += (d + 8) >> 4
                    if p != h:
                        dev[i] = dv + ((ad - dv) >> ds)
            # e stays between the scaled background and c: within 0 .. 4080
            bg[i] = e
            i += 1
    par[5] = nc
    par[6] = npos
    par[7] = nneg


@micropython.viper
def _despeckle(i: int, j: int, chg: ptr8, w32: ptr32, nw: int, w: int, h: int, m: int) -> int:
    # count the changed cells (chg & 3) with at least one changed 8-neighbour;
    # four cells per word are skipped at once where nothing changed
    cnt = 0
    mw = m * 0x01010101
    w1 = w - 1
    h1 = h - 1
    j = 0
    while j < nw:
        if w32[j] & mw:
            i = j << 2
            end = i + 4
            while i < end:
                if chg[i] & m:
                    y = i // w
                    x = i - y * w
                    ok = 0
                    if x > 0 and (chg[i - 1] & 3):
                        ok = 1
                    elif x < w1 and (chg[i + 1] & 3):
                        ok = 1
                    if ok == 0 and y > 0:
                        k = i - w
                        if chg[k] & 3:
                            ok = 1
                        elif x > 0 and (chg[k - 1] & 3):
                            ok = 1
                        elif x < w1 and (chg[k + 1] & 3):
                            ok = 1
                    if ok == 0 and y < h1:
                        k = i + w
                        if chg[k] & 3:
                            ok = 1
                        elif x > 0 and (chg[k - 1] & 3):
                            ok = 1
                        elif x < w1 and (chg[k + 1] & 3):
                            ok = 1
                    cnt += ok
                i += 1
        j += 1
    return cnt


@micropython.viper
def _rebase(cur: ptr8, bg: ptr16, dev: ptr8, chg: ptr8, n: int, dv: int):
    # background = this frame (first frame, global change); dv > 0: noise too
    i = 0
    while i < n:
        bg[i] = int(cur[i]) << 4
        chg[i] = 0
        if dv:
            dev[i] = dv
        i += 1


def _gain_table(m):
    # t[c] = the largest bg with m*bg - bg//2 <= 4096*c. For r = (c*4096 + bg//2) // bg:
    # r <= 254 <=> bg > t255[c], r >= 258 <=> bg <= t258[c]
    t = array("H", bytes(2 * 256))
    for c in range(256):
        x = c << 12
        b = x // m
        while m * (b + 1) - ((b + 1) >> 1) <= x:
            b += 1
        while m * b - (b >> 1) > x:
            b -= 1
        t[c] = b
    return t


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
                 slow_shift=0, absorb=20, settle=10):
        n = w8 * h8
        if n <= 0:
            raise ValueError("empty thumbnail")
        self.w8 = w8
        self.h8 = h8
        self.n = n
        self._bg = array("H", bytes(2 * n))
        # learned noise x16: starts at 16 and moves by (min(|d|, 256) - dev) >> 1 or >> 4
        # from below 256, so it never reaches 256: a byte
        self._dev = bytearray(n)
        self._nw = (n + 3) >> 2
        # change map: bytes, read four at a time by _despeckle (an aligned array)
        self._chg = array("I", bytes(4 * self._nw))
        self._age = bytearray(n)
        # level of a changed cell when it last moved: it is absorbed only after
        # `absorb` frames without moving away from it (a parked object)
        self._ref = bytearray(n)
        self._spans = None  # (start, end) runs of active cells, from set_mask()
        self._hist = array("H", bytes(2 * _HB))
        # threshold: [0:256] by learned noise, [256:512] by level; set_sensitivity()
        self._th = array("H", bytes(2 * 512))
        self._thd = array("H", bytes(2 * 512))  # the same at dusk
        self._glo = _gain_table(255)
        self._ghi = _gain_table(258)
        # viper parameters (and results): normal frames, learning frames
        self._parn = array("i", bytes(4 * 16))
        self._parl = array("i", bytes(4 * 16))
        self.min_frames = max(1, int(min_frames))
        self.warmup = max(1, int(warmup))
        self.light_pm = int(light_fraction * 1000)
        self.rel = rel
        self.fast_shift = fast_shift
        self.slow_shift = slow_shift
        self.absorb = absorb
        self.settle = settle
        for par, learning in ((self._parn, False), (self._parl, True)):
            par[9] = 1 if learning else fast_shift
            par[10] = 1 if learning else slow_shift
            par[11] = 1 if learning else 4
            par[14] = absorb
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
        # per-cell threshold by learned noise (x16): k * max(noise, 1) + floor;
        # the noise estimate is capped at 16 grey levels (256)
        th = self._th
        for dv in range(256):
            th[dv] = (max(dv, 16) * k8) >> 3
        # by level (grey): the floor, lowered in the dark (dusk: less contrast, and
        # JPEG flicker the learned noise covers), plus rel/256 of the level
        rel = self.rel
        for lv in range(256):
            th[256 + lv] = fl * 16 + ((lv * 16 * rel) >> 8)
        # at dusk (a dark picture) contrasts are low and the noise, which the
        # learned per-cell noise follows, decides: half the floor
        thd = self._thd
        for i in range(256):
            thd[i] = (th[i] * 3) >> 2
        for lv in range(256):
            thd[256 + lv] = fl * 8 + ((lv * 16 * rel) >> 8)

    def set_mask(self, mask):
        n = self.n
        act = bytearray(n)  # temporary: the loops run over the spans of active cells
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
        active = sum(act)
        if active == 0:
            raise ValueError("mask ignores every cell")
        spans = []
        i = 0
        while i < n:
            if act[i]:
                j = i
                while j < n and act[j]:
                    j += 1
                spans.append(i)
                spans.append(j)
                i = j
            else:
                i += 1
        self._spans = array("H", spans)
        self.active = active
        self._bufs = (self._bg, self._dev, self._chg, self._age, self._spans, len(spans),
                      self._th, self._glo, self._ghi)

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
        self.exposure_hold = False
        self._held = 0
        self._pg = 0
        self._still = 0

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
        f = self.frames
        self.frames = f + 1
        self.triggered = False
        self.global_change = False
        bg, dev, chg, age, sp, ns, th, glo, ghi = self._bufs
        if f == 0:
            # first frame after reset: it is the background
            _rebase(luma, bg, dev, chg, self.n, 16)
            self.run = 0
            self.score = 0
            return 0
        learning = f < self.warmup
        par = self._parl if learning else self._parn
        na = self.active
        _gtest(0, 0, luma, bg, chg, sp, ns, glo, ghi, par)
        g = 256
        looked = par[8]
        cnt = looked - par[5]
        if cnt and cnt * 4 >= looked:
            half = cnt >> 1
            if par[6] > half or cnt - par[7] <= half:
                # the median of cur/bg is outside 255..257 / 256: a light change
                g = _gain(0, 0, luma, bg, chg, sp, ns, self._hist)
                if -1 <= g - 256 <= 1:
                    g = 256  # dead band: no drift from the median's rounding
        self.gain = g
        # mean background level (x16) of the looked-at cells: dusk below 64 grey
        self.dusk = par[12] < looked * 1024
        if self.dusk:
            th = self._thd
        if not learning and (g > 256 + _BIG or g < 256 - _BIG):
            # A big exposure change. Auto-exposure overshoots and fades back over a
            # few frames, clipping the highlights on the way: a background rescaled
            # by such a frame is wrong where it clipped. Keep the background and
            # look again until the gain holds still (a lamp that stays on: the
            # new picture becomes the background) or returns (the overshoot is
            # over: the background was right). The run of alarm frames is kept.
            pg = self._pg
            self._pg = g
            self.score = 0
            if pg and (g - pg) * 64 <= pg and (pg - g) * 64 <= pg:
                self._still += 1
            else:
                self._still = 0
            if self._held < self.settle and self._still < 2:
                self._held += 1
                self.exposure_hold = True
                return 0
            # settled at a new exposure: not a pure gain everywhere (clipping, the
            # IR-cut filter, colours under a new light), so take the picture as is
            _rebase(luma, bg, dev, chg, self.n, 0)
            self.global_change = True
            self.rebaselines += 1
            self._held = 0
            self._pg = 0
            self.exposure_hold = False
            return 0
        self._held = 0
        self._pg = 0
        self._still = 0
        self.exposure_hold = False
        if g == 256:
            _step1(0, 0, luma, bg, dev, chg, age, self._ref, sp, ns, th, par)
        else:
            par[0] = g
            _stepg(0, 0, luma, bg, dev, chg, age, self._ref, sp, ns, th, par)
        score = 0
        if par[5]:
            # at dusk a cell over half its threshold next to a changed one counts too
            score = _despeckle(0, 0, chg, chg, self._nw, self.w8, self.h8,
                               51 if self.dusk else 3) * 1000 // na
            if max(par[6], par[7]) * 1000 > self.light_pm * na:
                # most cells moved the same way, and the gain did not explain
                # it: a global change -> re-baseline, no alarm
                _rebase(luma, bg, dev, chg, self.n, 0)
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
