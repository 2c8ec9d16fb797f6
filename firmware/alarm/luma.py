# Luma thumbnail (1/8 scale) straight from a baseline JPEG, without a decoder.
#
# The DC coefficient of each 8x8 luma block is the block average, so a baseline
# JPEG carries its own 1/8-scale grey thumbnail: 40x30 at QVGA, 80x60 at VGA.
# Only the entropy-coded data has to be Huffman-decoded; AC coefficients are
# decoded just far enough to be skipped, no IDCT, no colour conversion.
# The result equals libjpeg's 1/8-scale decode to grey exactly:
#     pixel = clamp(((dc * q0 + 4) >> 3) + 128, 0, 255)
# (jidctred.c jpeg_idct_1x1), with ceil(w/8) x ceil(h/8) pixels.
#
# MicroPython module: the hot loop is @micropython.viper (x64 and xtensawin).
# Per frame nothing is allocated; Huffman lookup tables are rebuilt only when
# a frame's DHT bytes differ from the cached ones.
from array import array

import micropython
from micropython import const

# Per Huffman table (slot 0..3 DC, 4..7 AC) in self._tab:
#   [0:512]   code length for each 9-bit lookahead (0 = code longer than 9
#             bits); AC tables: code length + number of extra bits
#   [512:1024] symbol for each 9-bit lookahead; AC tables: the zigzag advance
#             (run + 1, 16 for ZRL, 0 for EOB)
#   [1024:1280] HUFFVAL
_LT = const(1280)
# Per table in self._slow (array 'H'): [l] first code of length l,
# [17+l] number of codes of length l, [34+l] index of its first symbol, [51+l] the 16-bit
# lookaheads below which the code has at most l bits (first code + count) << (16 - l).
_ST = const(68)
_RAW = const(273)  # cached raw DHT bytes per slot: 16 counts + 256 values (+1)

_MAXB = const(10)  # max blocks per MCU (JPEG limit)

# par (array 'i') layout
_P_POS = const(0)
_P_END = const(1)
_P_MCUX = const(2)
_P_MCUY = const(3)
_P_RI = const(4)
_P_NB = const(5)
_P_Q0 = const(6)
_P_W8 = const(7)
_P_H8 = const(8)
_P_LH = const(9)
_P_LV = const(10)
# per block of the MCU (10 entries each): DC table offset in tab, its AC table's multi-symbol
# table offset in mul (bytes), luma: offset in out from the MCU's first luma block + 1 (chroma: 0;
# a ptr32 load is unsigned), dx | dy << 4
_P_DC = const(11)
_P_AC = const(21)
_P_OUT = const(31)
_P_DXY = const(41)
_P_DCV = const(51)  # the DC table's values in mul (_dc_values)
_P_DSB = const(61)  # the DC table's slow table offset in slow
_P_ASB = const(71)  # the AC table's | its offset in tab << 16
# mul: per DC table its values (512 entries, _dc_values), per AC table its multi-symbol table
# (2048, _multi): the tables 0 and 1 first (baseline JPEG has no others), the tables 2 and 3
# (extended JPEG) added when a frame uses one of them. Offsets by slot (0..3 DC, 4..7 AC):
_MOFF = (0, 512, 5120, 5632, 1024, 3072, 6144, 8192)
_MUL_BASE = const(5120)
_MUL_ALL = const(10240)

_ERRS = {
    -1: "truncated JPEG: entropy-coded data ends early",
    -2: "corrupt JPEG: invalid Huffman code",
    -3: "corrupt JPEG: more than 64 coefficients in a block",
    -4: "corrupt JPEG: restart marker missing or out of sequence",
    -5: "corrupt JPEG: DC difference too large",
}

# Standard tables (JPEG Annex K.3), used when a frame has no DHT (MJPEG style),
# as libjpeg-turbo does.
_STD_DC0 = b"\x00\x01\x05\x01\x01\x01\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b"
_STD_DC1 = b"\x00\x03\x01\x01\x01\x01\x01\x01\x01\x01\x01\x00\x00\x00\x00\x00\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b"
_STD_AC0 = (
    b"\x00\x02\x01\x03\x03\x02\x04\x03\x05\x05\x04\x04\x00\x00\x01\x7d"
    b"\x01\x02\x03\x00\x04\x11\x05\x12\x21\x31\x41\x06\x13\x51\x61\x07"
    b"\x22\x71\x14\x32\x81\x91\xa1\x08\x23\x42\xb1\xc1\x15\x52\xd1\xf0"
    b"\x24\x33\x62\x72\x82\x09\x0a\x16\x17\x18\x19\x1a\x25\x26\x27\x28"
    b"\x29\x2a\x34\x35\x36\x37\x38\x39\x3a\x43\x44\x45\x46\x47\x48\x49"
    b"\x4a\x53\x54\x55\x56\x57\x58\x59\x5a\x63\x64\x65\x66\x67\x68\x69"
    b"\x6a\x73\x74\x75\x76\x77\x78\x79\x7a\x83\x84\x85\x86\x87\x88\x89"
    b"\x8a\x92\x93\x94\x95\x96\x97\x98\x99\x9a\xa2\xa3\xa4\xa5\xa6\xa7"
    b"\xa8\xa9\xaa\xb2\xb3\xb4\xb5\xb6\xb7\xb8\xb9\xba\xc2\xc3\xc4\xc5"
    b"\xc6\xc7\xc8\xc9\xca\xd2\xd3\xd4\xd5\xd6\xd7\xd8\xd9\xda\xe1\xe2"
    b"\xe3\xe4\xe5\xe6\xe7\xe8\xe9\xea\xf1\xf2\xf3\xf4\xf5\xf6\xf7\xf8"
    b"\xf9\xfa"
)
_STD_AC1 = (
    b"\x00\x02\x01\x02\x04\x04\x03\x04\x07\x05\x04\x04\x00\x01\x02\x77"
    b"\x00\x01\x02\x03\x11\x04\x05\x21\x31\x06\x12\x41\x51\x07\x61\x71"
    b"\x13\x22\x32\x81\x08\x14\x42\x91\xa1\xb1\xc1\x09\x23\x33\x52\xf0"
    b"\x15\x62\x72\xd1\x0a\x16\x24\x34\xe1\x25\xf1\x17\x18\x19\x1a\x26"
    b"\x27\x28\x29\x2a\x35\x36\x37\x38\x39\x3a\x43\x44\x45\x46\x47\x48"
    b"\x49\x4a\x53\x54\x55\x56\x57\x58\x59\x5a\x63\x64\x65\x66\x67\x68"
    b"\x69\x6a\x73\x74\x75\x76\x77\x78\x79\x7a\x82\x83\x84\x85\x86\x87"
    b"\x88\x89\x8a\x92\x93\x94\x95\x96\x97\x98\x99\x9a\xa2\xa3\xa4\xa5"
    b"\xa6\xa7\xa8\xa9\xaa\xb2\xb3\xb4\xb5\xb6\xb7\xb8\xb9\xba\xc2\xc3"
    b"\xc4\xc5\xc6\xc7\xc8\xc9\xca\xd2\xd3\xd4\xd5\xd6\xd7\xd8\xd9\xda"
    b"\xe2\xe3\xe4\xe5\xe6\xe7\xe8\xe9\xea\xf2\xf3\xf4\xf5\xf6\xf7\xf8"
    b"\xf9\xfa"
)


@micropython.viper
def _scan(bits: int, buf: int, k: int, data: ptr8, tab: ptr8, mul: ptr16, slow: ptr16,
          par: ptr32, out: ptr8) -> int:
    # Decode one baseline scan; store luma DC values into out. Returns 0 or an
    # error code (<0). Every read of data is bounds-checked against end; past
    # the end or at a marker, zero bits are supplied (and counted in pad).
    # Cost is per statement (the emitter keeps nothing in registers across statements but the
    # first three locals: bits, buf and k, parameters called with 0 for that reason), so the
    # hot paths are written in as few statements as they can be.
    # buf holds `bits` (<= 32) unread bits; two bytes are read at once when neither is 0xFF (no
    # stuffing, no marker), else one by one.
    pos = int(par[0])
    end = int(par[1])
    mcux = int(par[2])
    mcuy = int(par[3])
    ri = int(par[4])
    nb = int(par[5])
    q0 = int(par[6])
    w8 = int(par[7])
    h8 = int(par[8])
    lh = int(par[9])
    lv = int(par[10])
    p0 = int(0)  # luma DC predictor (the chroma DC values are skipped, not summed)
    pad = int(0)
    lim = end - 1  # two bytes at pos < lim
    rleft = ri
    rst = int(0)
    my = int(0)
    # The outer loops test their condition at the top and jump back unconditionally: a
    # `while cond:` loop's back edge is a conditional branch, which mpy-cross before 1.22 cannot
    # encode across a body this long on Xtensa ("bccz out of range", a broken jump on a board).
    while True:
        if my >= mcuy:
            break
        mx = int(0)
        row = my * lv * w8
        while True:
            if mx >= mcux:
                break
            if ri != 0:
                if rleft == 0:
                    # restart interval boundary: byte-align, expect RSTn
                    if pad * 8 > bits:
                        par[0] = pos
                        return -1
                    buf = 0
                    bits = 0
                    pad = 0
                    if pos + 1 >= end:
                        par[0] = pos
                        return -1
                    if int(data[pos]) != 0xFF or int(data[pos + 1]) != 0xD0 + (rst & 7):
                        par[0] = pos
                        return -4
                    pos += 2
                    rst += 1
                    p0 = 0
                    rleft = ri
                rleft -= 1
            base = row + mx * lh - 1  # out offset of this MCU's first luma block, - 1
            edge = int(0)  # some of its blocks are past the edge
            if mx * lh + lh > w8 or my * lv + lv > h8:
                edge = 1
            b = int(0)
            while True:
                if b >= nb:
                    break
                # ---- DC ----
                if bits <= 16:
                    if pos < lim and int(data[pos]) != 0xFF and int(data[pos + 1]) != 0xFF:
                        buf = (buf << 16) | (int(data[pos]) << 8) | int(data[pos + 1])
                        pos += 2
                        bits += 16
                    else:
                        while bits <= 24:
                            if pos < end:
                                c = int(data[pos])
                                if c == 0xFF:
                                    if pos + 1 < end and int(data[pos + 1]) == 0:
                                        pos += 2
                                        buf = (buf << 8) | 0xFF
                                    else:
                                        buf = buf << 8
                                        pad += 1
                                else:
                                    pos += 1
                                    buf = (buf << 8) | c
                            else:
                                buf = buf << 8
                                pad += 1
                            bits += 8
                look = (buf >> (bits - 9)) & 511
                e = int(mul[int(par[51 + b]) + look])  # size and value at once (_dc_values)
                if e != 0:
                    bits -= e & 15
                    v = (e >> 4) - 256
                else:
                    tb = int(par[11 + b])  # the DC table
                    look = (buf >> (bits - 9)) & 511
                    l = int(tab[tb + look])
                    if l != 0:
                        s = int(tab[tb + 512 + look])
                        bits -= l
                    else:
                        # a code longer than 9 bits, or a size over 11 (left out of the fast table)
                        sb = int(par[61 + b])  # its slow table
                        s = -1
                        l = 1
                        d = (buf >> (bits - 16)) & 0xFFFF  # the code is the shortest l with d < limit[l]
                        while l <= 16:
                            if d < int(slow[sb + 51 + l]):
                                s = int(tab[tb + 1024 + int(slow[sb + 34 + l]) + (d >> (16 - l)) - int(slow[sb + l])])
                                bits -= l
                                break
                            l += 1
                        if s < 0:
                            par[0] = pos
                            return -2
                        if s > 11:
                            par[0] = pos
                            return -5
                    if s != 0:
                        while bits < s:
                            if pos < end:
                                c = int(data[pos])
                                if c == 0xFF:
                                    if pos + 1 < end and int(data[pos + 1]) == 0:
                                        pos += 2
                                        buf = (buf << 8) | 0xFF
                                    else:
                                        buf = buf << 8
                                        pad += 1
                                else:
                                    pos += 1
                                    buf = (buf << 8) | c
                            else:
                                buf = buf << 8
                                pad += 1
                            bits += 8
                        bits -= s
                    v = 0
                    if s != 0:
                        v = (buf >> bits) & ((1 << s) - 1)
                        if v < (1 << (s - 1)):
                            v = v + 1 - (1 << s)
                o = int(par[31 + b])  # 1 + offset in out, 0: not luma
                if o != 0:
                    p0 += v
                    v = ((p0 * q0 + 4) >> 3) + 128
                    if uint(v) > uint(255):
                        v = 0
                        if p0 > 0:
                            v = 255
                    if edge == 0:
                        out[base + o] = v
                    else:
                        d = int(par[41 + b])
                        if mx * lh + (d & 15) < w8 and my * lv + (d >> 4) < h8:
                            out[base + o] = v
                # ---- AC: skipped, several symbols per lookup where they fit ----
                mt = ptr16(uint(mul) + int(par[21 + b]))  # the AC table's _multi table
                k = 1
                while True:
                    while True:
                        if bits <= 16:
                            if pos < lim and int(data[pos]) != 0xFF and int(data[pos + 1]) != 0xFF:
                                buf = (buf << 16) | (int(data[pos]) << 8) | int(data[pos + 1])
                                pos += 2
                                bits += 16
                            else:
                                while bits <= 24:
                                    if pos < end:
                                        c = int(data[pos])
                                        if c == 0xFF:
                                            if pos + 1 < end and int(data[pos + 1]) == 0:
                                                pos += 2
                                                buf = (buf << 8) | 0xFF
                                            else:
                                                buf = buf << 8
                                                pad += 1
                                        else:
                                            pos += 1
                                            buf = (buf << 8) | c
                                    else:
                                        buf = buf << 8
                                        pad += 1
                                    bits += 8
                        e = int(mt[(buf >> (bits - 11)) & 2047])
                        k += e >> 4
                        if k >= 64:
                            break
                        bits -= e & 15
                    # the block's end (k == 64, or an EOB: k = 1024 + where the EOB was, < 64), a long
                    # code, or symbols that would go past 64
                    if uint(k - 1025) < uint(63) or k == 64:
                        bits -= e & 15
                        break
                    k -= e >> 4
                    # one symbol at a time
                    tb = int(par[71 + b]) >> 16  # the AC table
                    while bits <= 24:
                        if pos < end:
                            c = int(data[pos])
                            if c == 0xFF:
                                if pos + 1 < end and int(data[pos + 1]) == 0:
                                    pos += 2
                                    buf = (buf << 8) | 0xFF
                                else:
                                    buf = buf << 8
                                    pad += 1
                            else:
                                pos += 1
                                buf = (buf << 8) | c
                        else:
                            buf = buf << 8
                            pad += 1
                        bits += 8
                    look = (buf >> (bits - 9)) & 511
                    l = int(tab[tb + look])
                    if l != 0:
                        # l = code length + extra bits (<= 24 < 25 bits present),
                        # entry = zigzag advance, 0 = EOB
                        bits -= l
                        l = int(tab[tb + 512 + look])
                        if l == 0:
                            break
                        k += l
                    else:
                        sb = int(par[71 + b]) & 0xFFFF  # its slow table
                        s = -1
                        l = 10
                        d = (buf >> (bits - 16)) & 0xFFFF  # the code is the shortest l with d < limit[l]
                        while l <= 16:
                            if d < int(slow[sb + 51 + l]):
                                s = int(tab[tb + 1024 + int(slow[sb + 34 + l]) + (d >> (16 - l)) - int(slow[sb + l])])
                                bits -= l
                                break
                            l += 1
                        if s < 0:
                            par[0] = pos
                            return -2
                        r = s >> 4
                        s = s & 15
                        if s != 0:
                            while bits < s:
                                if pos < end:
                                    c = int(data[pos])
                                    if c == 0xFF:
                                        if pos + 1 < end and int(data[pos + 1]) == 0:
                                            pos += 2
                                            buf = (buf << 8) | 0xFF
                                        else:
                                            buf = buf << 8
                                            pad += 1
                                    else:
                                        pos += 1
                                        buf = (buf << 8) | c
                                else:
                                    buf = buf << 8
                                    pad += 1
                                bits += 8
                            bits -= s
                            k += r + 1
                        elif r == 15:
                            k += 16
                        else:
                            break
                    if k >= 64:
                        if k > 64:
                            par[0] = pos
                            return -3
                        break
                b += 1
            mx += 1
        my += 1
    par[0] = pos
    if pad * 8 > bits:
        return -1
    return 0


@micropython.viper
def _multi(tab: ptr8, tb: int, mul: ptr16, mb: int):
    # The multi-symbol table of the AC table at tab[tb:] into mul[mb:mb + 2048]: for each 11-bit
    # lookahead, as many whole AC symbols (code + extra bits, from the 9-bit table) as fit,
    # stopping after an EOB: bits used | advance << 4, where the advance is the symbols' zigzag
    # advance, + 1024 with an EOB (so that k >= 64 in _scan stops at every EOB, and the EOB's
    # place can be told), 2047 when not even the first symbol fits in 11 bits.
    tab = ptr8(uint(tab) + tb)
    mul = ptr16(uint(mul) + 2 * mb)
    v = 0
    while v < 2048:
        n = 0
        adv = 0
        while n < 11:
            look = ((v << 9) >> (11 - n)) & 511  # the next 9 bits, zeros past the window
            ln = int(tab[look])
            if ln == 0 or ln > 11 - n:
                break
            a = int(tab[512 + look])
            n += ln
            if a == 0:
                adv += 1024
                break
            adv += a
        if n == 0:
            adv = 2047
        mul[v] = n | (adv << 4)
        v += 1


@micropython.viper
def _same_copy(src: ptr8, off: int, dst: ptr8, doff: int, n: int) -> int:
    # 1 if dst[doff:doff+n] == src[off:off+n]; otherwise copy and return 0
    i = int(0)
    while i < n:
        if src[off + i] != dst[doff + i]:
            break
        i += 1
    if i == n:
        return 1
    while i < n:
        dst[doff + i] = src[off + i]
        i += 1
    return 0


@micropython.viper
def _skip_entropy(data: ptr8, pos: int, end: int) -> int:
    # position of the next marker (FF xx, xx not 00, not RSTn) or end
    while pos + 1 < end:
        if int(data[pos]) == 0xFF:
            c = int(data[pos + 1])
            if c != 0 and c != 0xFF and (c < 0xD0 or c > 0xD7):
                return pos
            if c == 0xFF:
                pos += 1
                continue
            pos += 2
            continue
        pos += 1
    return end


@micropython.viper
def _gray(src: ptr8, w: int, h: int, out: ptr8, w8: int, h8: int):
    # 8x8 block averages of a w x h 8-bit frame; edge blocks replicate the last
    # row/column (what a JPEG encoder does), so all blocks average 64 samples.
    by = int(0)
    while by < h8:
        bx = int(0)
        while bx < w8:
            x0 = bx * 8
            full = x0 + 8 <= w
            sm = int(0)
            j = int(0)
            while j < 8:
                y = by * 8 + j
                if y >= h:
                    y = h - 1
                p = y * w + x0
                if full:
                    sm += int(src[p]) + int(src[p + 1]) + int(src[p + 2]) + int(src[p + 3]) + int(src[p + 4]) + int(src[p + 5]) + int(src[p + 6]) + int(src[p + 7])
                else:
                    i = int(0)
                    while i < 8:
                        x = x0 + i
                        if x >= w:
                            x = w - 1
                        sm += int(src[y * w + x])
                        i += 1
                j += 1
            out[by * w8 + bx] = (sm + 32) >> 6
            bx += 1
        by += 1


class LumaExtractor:
    """Extract the 1/8-scale luma thumbnail of baseline JPEG frames.

    ex = LumaExtractor(max_w8, max_h8)
    w8, h8 = ex.extract(jpeg)      # ex.luma[:w8*h8] row-major, 0..255
    w8, h8 = ex.from_gray(buf, w, h)  # same for raw 8-bit GRAYSCALE frames
    Raises ValueError for anything it cannot decode exactly.
    """

    def __init__(self, max_w8=80, max_h8=60):
        self.max_w8 = max_w8
        self.max_h8 = max_h8
        self.luma = bytearray(max_w8 * max_h8)
        self.w8 = 0
        self.h8 = 0
        self._tab = bytearray(8 * _LT)
        # AC slots' multi-symbol tables (_multi), DC slots' size-and-value tables (_dc_values)
        self._mul = array("H", bytes(2 * _MUL_BASE))
        self._slow = array("H", bytes(2 * 8 * _ST))
        self._raw = bytearray(8 * _RAW)
        self._rawlen = array("H", bytes(16))  # 0 = never built
        self._par = array("i", bytes(4 * 84))
        self._q0 = array("H", bytes(8))
        self._qdef = 0  # bitmask of DQT tables defined in this frame
        # components of the frame (max 4): id, h, v, tq
        self._cid = bytearray(4)
        self._ch = bytearray(4)
        self._cv = bytearray(4)
        self._ctq = bytearray(4)
        self._hdef = 0
        self._nf = 0
        self._adobe_rgb = 0
        self._w = self._h = self._hmax = self._vmax = 1
        self.rebuilds = 0  # Huffman table (re)builds, for tests/benchmarks

    # ---- Huffman tables ----
    def _load_table(self, src, off, n, slot):
        # src[off:off+n] = 16 counts + values; rebuild lookup tables if changed
        if n > _RAW - 1:
            raise ValueError("corrupt JPEG: bad Huffman table")
        base = slot * _RAW
        same = _same_copy(src, off, self._raw, base, n)  # leaves raw == src
        if same and self._rawlen[slot] == n + 1:
            return
        self._rawlen[slot] = 0  # invalid until built
        self._build(slot, base, n)
        self._rawlen[slot] = n + 1
        self.rebuilds += 1

    def _build(self, slot, base, n):
        raw = self._raw
        tab = self._tab
        slow = self._slow
        tb = slot * _LT
        sb = slot * _ST
        total = 0
        for l in range(16):
            total += raw[base + l]
        if total > 256 or total + 16 != n or total == 0:
            raise ValueError("corrupt JPEG: bad Huffman table")
        isdc = slot < 4
        for i in range(total):
            v = raw[base + 16 + i]
            tab[tb + 1024 + i] = v
            if isdc and v > 15:
                raise ValueError("corrupt JPEG: bad DC Huffman table")
        for i in range(512):
            tab[tb + i] = 0
        code = 0
        k = 0
        for l in range(1, 17):
            cnt = raw[base + l - 1]
            slow[sb + l] = code & 0xFFFF
            slow[sb + 17 + l] = cnt
            slow[sb + 34 + l] = k
            for _ in range(cnt):
                if code >= (1 << l):
                    raise ValueError("corrupt JPEG: bad Huffman table")
                if l <= 9:
                    sh = 9 - l
                    a = code << sh
                    sym = raw[base + 16 + k]
                    if isdc:
                        # a size over 11 is refused by _scan's slow path: not in the fast table
                        ln = l if sym <= 11 else 0
                    else:
                        # AC: consume code + extra bits at once; store the
                        # zigzag advance (r+1, 16 for ZRL, 0 for EOB)
                        ln = l + (sym & 15)
                        sym = (sym >> 4) + 1 if sym & 15 else (16 if sym == 0xF0 else 0)
                    for j in range(a, a + (1 << sh)):
                        tab[tb + j] = ln
                        tab[tb + 512 + j] = sym
                code += 1
                k += 1
            if code >= (1 << l):
                raise ValueError("corrupt JPEG: bad Huffman table")
            slow[sb + 51 + l] = code << (16 - l)
            code <<= 1
        if _MOFF[slot] >= _MUL_BASE and len(self._mul) < _MUL_ALL:
            # a table 2 or 3 (extended JPEG): room for all of them, once
            self._mul.extend(array("H", bytes(2 * (_MUL_ALL - len(self._mul)))))
        if isdc:
            self._dc_values(slot)
        else:
            _multi(tab, tb, self._mul, _MOFF[slot])

    def _dc_values(self, slot):
        # for each 9-bit lookahead whose DC code and extra bits both fit in it: their length |
        # (the difference + 256) << 4; 0: they do not (_scan decodes them the long way)
        tab = self._tab
        tb = slot * _LT
        mul = self._mul
        db = _MOFF[slot]
        for j in range(512):
            e = 0
            l = tab[tb + j]
            if l:
                s = tab[tb + 512 + j]
                if l + s <= 9:
                    x = (j >> (9 - l - s)) & ((1 << s) - 1)
                    if s and x < (1 << (s - 1)):
                        x += 1 - (1 << s)
                    e = (l + s) | (x + 256) << 4
            mul[db + j] = e

    def _dht(self, d, i, end):
        while i < end:
            tc = d[i]
            th = tc & 15
            tc >>= 4
            if tc > 1 or th > 3 or i + 17 > end:
                raise ValueError("corrupt JPEG: bad DHT segment")
            n = 16
            for l in range(16):
                n += d[i + 1 + l]
            if i + 1 + n > end:
                raise ValueError("corrupt JPEG: bad DHT segment")
            slot = th + 4 * tc
            self._load_table(d, i + 1, n, slot)
            self._hdef |= 1 << slot
            i += 1 + n

    def _dqt(self, d, i, end):
        while i < end:
            pq = d[i] >> 4
            tq = d[i] & 15
            if tq > 3 or pq > 1:
                raise ValueError("corrupt JPEG: bad DQT segment")
            size = 64 * (pq + 1)
            if i + 1 + size > end:
                raise ValueError("corrupt JPEG: bad DQT segment")
            if pq:
                self._q0[tq] = (d[i + 1] << 8) | d[i + 2]
            else:
                self._q0[tq] = d[i + 1]
            self._qdef |= 1 << tq
            i += 1 + size

    def _sof(self, d, i, end):
        if end - i < 6:
            raise ValueError("corrupt JPEG: bad SOF segment")
        if d[i] != 8:
            raise ValueError("unsupported JPEG: %d-bit samples (only 8-bit)" % d[i])
        h = (d[i + 1] << 8) | d[i + 2]
        w = (d[i + 3] << 8) | d[i + 4]
        nf = d[i + 5]
        if w == 0 or h == 0:
            raise ValueError("unsupported JPEG: zero size (DNL)")
        if nf != 1 and nf != 3:
            raise ValueError("unsupported JPEG: %d components" % nf)
        if end - i < 6 + 3 * nf:
            raise ValueError("corrupt JPEG: bad SOF segment")
        hmax = 1
        vmax = 1
        for c in range(nf):
            p = i + 6 + 3 * c
            self._cid[c] = d[p]
            hv = d[p + 1]
            hh = hv >> 4
            vv = hv & 15
            if hh < 1 or hh > 4 or vv < 1 or vv > 4 or d[p + 2] > 3:
                raise ValueError("corrupt JPEG: bad SOF component")
            self._ch[c] = hh
            self._cv[c] = vv
            self._ctq[c] = d[p + 2]
            if hh > hmax:
                hmax = hh
            if vv > vmax:
                vmax = vv
        if nf == 3 and (self._ch[0] != hmax or self._cv[0] != vmax):
            raise ValueError("unsupported JPEG: luma not at the highest sampling")
        if nf == 3 and self._cid[0] == 0x52 and self._cid[1] == 0x47 and self._cid[2] == 0x42:
            raise ValueError("unsupported JPEG: RGB, not YCbCr")
        self._nf = nf
        self._w = w
        self._h = h
        self._hmax = hmax
        self._vmax = vmax
        w8 = (w + 7) >> 3
        h8 = (h + 7) >> 3
        if w8 > self.max_w8 or h8 > self.max_h8:
            raise ValueError("JPEG %dx%d too large for a %dx%d thumbnail" % (w, h, self.max_w8, self.max_h8))
        self.w8 = w8
        self.h8 = h8

    def _std(self, slot):
        # libjpeg-turbo falls back to the standard tables (MJPEG frames)
        t = (_STD_DC0, _STD_DC1, None, None, _STD_AC0, _STD_AC1, None, None)[slot]
        if t is None:
            raise ValueError("corrupt JPEG: Huffman table %d not defined" % slot)
        self._load_table(t, 0, len(t), slot)

    def _sos(self, d, i, end, ri):
        # returns True if this scan held the luma component (decoded)
        if self._nf == 0:
            raise ValueError("corrupt JPEG: SOS before SOF")
        if end - i < 1:
            raise ValueError("corrupt JPEG: bad SOS segment")
        ns = d[i]
        if ns < 1 or ns > self._nf or end - i != 4 + 2 * ns:
            raise ValueError("corrupt JPEG: bad SOS segment")
        p = i + 1 + 2 * ns
        if d[p] != 0 or d[p + 1] != 63 or d[p + 2] != 0:
            raise ValueError("unsupported JPEG: not a baseline sequential scan")
        par = self._par
        nb = 0
        luma = False
        for s in range(ns):
            cs = d[i + 1 + 2 * s]
            tt = d[i + 2 + 2 * s]
            c = 0
            while c < self._nf and self._cid[c] != cs:
                c += 1
            if c == self._nf:
                raise ValueError("corrupt JPEG: SOS names an unknown component")
            td = tt >> 4
            ta = tt & 15
            if td > 3 or ta > 3:
                raise ValueError("corrupt JPEG: bad SOS table selector")
            if not (self._hdef >> td) & 1:
                self._std(td)
                self._hdef |= 1 << td
            if not (self._hdef >> (ta + 4)) & 1:
                self._std(ta + 4)
                self._hdef |= 1 << (ta + 4)
            if c == 0:
                luma = True
            if ns == 1:
                hh = 1
                vv = 1
            else:
                hh = self._ch[c]
                vv = self._cv[c]
            for dy in range(vv):
                for dx in range(hh):
                    if nb >= _MAXB:
                        raise ValueError("corrupt JPEG: too many blocks per MCU")
                    par[_P_DC + nb] = td * _LT
                    par[_P_AC + nb] = 2 * _MOFF[ta + 4]  # bytes into mul
                    par[_P_OUT + nb] = 1 + dy * self.w8 + dx if c == 0 else 0
                    par[_P_DXY + nb] = dx | dy << 4
                    par[_P_DCV + nb] = _MOFF[td]
                    par[_P_DSB + nb] = td * _ST
                    par[_P_ASB + nb] = (ta + 4) * _ST | (ta + 4) * _LT << 16
                    nb += 1
        if not luma:
            return False
        if self._adobe_rgb and self._nf == 3:
            raise ValueError("unsupported JPEG: RGB (Adobe transform 0), not YCbCr")
        if not (self._qdef >> self._ctq[0]) & 1:
            raise ValueError("corrupt JPEG: quantization table not defined")
        if ns == 1:
            # non-interleaved: the component's own block grid
            cw = (self._w * self._ch[0] + self._hmax - 1) // self._hmax
            chh = (self._h * self._cv[0] + self._vmax - 1) // self._vmax
            par[_P_MCUX] = (cw + 7) >> 3
            par[_P_MCUY] = (chh + 7) >> 3
            par[_P_LH] = 1
            par[_P_LV] = 1
        else:
            par[_P_MCUX] = (self._w + 8 * self._hmax - 1) // (8 * self._hmax)
            par[_P_MCUY] = (self._h + 8 * self._vmax - 1) // (8 * self._vmax)
            par[_P_LH] = self._ch[0]
            par[_P_LV] = self._cv[0]
        par[_P_POS] = end
        par[_P_END] = len(d)
        par[_P_RI] = ri
        par[_P_NB] = nb
        par[_P_Q0] = self._q0[self._ctq[0]]
        par[_P_W8] = self.w8
        par[_P_H8] = self.h8
        r = _scan(0, 0, 0, d, self._tab, self._mul, self._slow, par, self.luma)
        if r < 0:
            raise ValueError(_ERRS[r])
        return True

    def extract(self, jpeg):
        """Fill self.luma from a baseline JPEG; return (w8, h8)."""
        self.extract_into(jpeg)
        return self.w8, self.h8

    def extract_into(self, jpeg):
        """extract() without the result tuple: allocates nothing at all
        (once the Huffman tables are cached); sets self.w8, self.h8."""
        try:
            self._extract(jpeg)
        except IndexError:
            # a safety net: every read is meant to be bounds-checked already
            raise ValueError("corrupt JPEG: structure out of bounds")

    def _extract(self, jpeg):
        d = jpeg
        n = len(d)
        if n < 4 or d[0] != 0xFF or d[1] != 0xD8:
            raise ValueError("not a JPEG: no SOI marker")
        self._hdef = 0
        self._qdef = 0
        self._nf = 0
        self._adobe_rgb = 0
        ri = 0
        i = 2
        while True:
            if i >= n:
                raise ValueError("truncated JPEG: no scan with the luma component")
            if d[i] != 0xFF:
                raise ValueError("corrupt JPEG: marker expected at offset %d" % i)
            while i < n and d[i] == 0xFF:
                i += 1
            if i >= n:
                raise ValueError("truncated JPEG: ends in a marker")
            m = d[i]
            i += 1
            if 0xD0 <= m <= 0xD7 or m == 0x01:
                continue
            if m == 0xD8 or m == 0xD9 or m == 0:
                raise ValueError("corrupt JPEG: unexpected marker 0x%02X" % m)
            if i + 2 > n:
                raise ValueError("truncated JPEG: in a marker segment")
            ln = (d[i] << 8) | d[i + 1]
            if ln < 2 or i + ln > n:
                raise ValueError("truncated JPEG: in a marker segment")
            seg = i + 2
            i += ln
            if m == 0xC4:
                self._dht(d, seg, i)
            elif m == 0xDB:
                self._dqt(d, seg, i)
            elif m == 0xC0 or m == 0xC1:
                if self._nf:
                    raise ValueError("corrupt JPEG: two SOF markers")
                self._sof(d, seg, i)
            elif m == 0xC2 or m == 0xC6 or m == 0xCA or m == 0xCE:
                raise ValueError("unsupported JPEG: progressive")
            elif m == 0xC3 or m == 0xC7 or m == 0xCB or m == 0xCF:
                raise ValueError("unsupported JPEG: lossless")
            elif m == 0xC5:
                raise ValueError("unsupported JPEG: hierarchical")
            elif m == 0xC9 or m == 0xCC or m == 0xCD:
                raise ValueError("unsupported JPEG: arithmetic coding")
            elif m == 0xDD:
                if ln != 4:
                    raise ValueError("corrupt JPEG: bad DRI segment")
                ri = (d[seg] << 8) | d[seg + 1]
            elif m == 0xEE:
                # Adobe APP14, transform 0 with 3 components = RGB
                if ln >= 14 and d[seg] == 0x41 and d[seg + 1] == 0x64 and d[seg + 11] == 0 and d[seg + 2] == 0x6F:
                    self._adobe_rgb = 1
            elif m == 0xDA:
                if self._sos(d, seg, i, ri):
                    pos = self._par[_P_POS]
                    p = _skip_entropy(d, pos, n)
                    if p >= n:
                        raise ValueError("truncated JPEG: no EOI after the scan")
                    if p - pos > 16:  # a damaged SOF: the frame is larger than it says
                        raise ValueError("corrupt JPEG: scan data goes on after the last block")
                    return
                i = _skip_entropy(d, i, n)

    def from_gray(self, buf, w, h):
        """Block-average a raw 8-bit w x h frame into self.luma; (w8, h8)."""
        w8 = (w + 7) >> 3
        h8 = (h + 7) >> 3
        if w < 1 or h < 1 or w8 > self.max_w8 or h8 > self.max_h8:
            raise ValueError("GRAYSCALE frame %dx%d does not fit the thumbnail" % (w, h))
        if len(buf) < w * h:
            raise ValueError("GRAYSCALE frame shorter than %dx%d" % (w, h))
        _gray(buf, w, h, self.luma, w8, h8)
        self.w8 = w8
        self.h8 = h8
        return w8, h8
