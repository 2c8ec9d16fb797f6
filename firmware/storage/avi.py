"""MJPEG AVI files written frame by frame, without holding the file in memory.

The layout is fixed: a 512-byte header (hdrl: avih, one video stream strl with strh and strf
'MJPG', then JUNK up to 500), the movi list, and at the end idx1. The camera's JPEGs go into
'00dc' chunks unchanged. The sizes in the header are patched and idx1 is written when the clip
is closed; a clip cut short (power loss, card pulled) still has every chunk it wrote, and
`repair()` rebuilds the sizes and idx1 from them at the next boot. The index entries of an open
clip (16 bytes a frame) sit in one buffer the recorder preallocates for the longest clip.
"""
import struct

HEADER = 512              # bytes before the movi list
MOVI = HEADER + 8         # file offset of the fourcc 'movi' (idx1 offsets count from here)
FIRST = MOVI + 4          # file offset of the first chunk
CHUNK = b'00dc'
OPEN = 0                  # RIFF size of a clip being written: repair() finishes it


def header(w, h, fps, frames, riff, movi, biggest):
    """The 512 bytes before movi's data, with the given frame count and sizes."""
    us = 1000000 // fps
    avih = struct.pack('<14I', us, biggest * fps, 0, 0x10, frames, 0, 1, biggest, w, h, 0, 0, 0, 0)
    strh = b'vidsMJPG' + struct.pack('<IHHIIIIIIIIhhhh', 0, 0, 0, 0, 1, fps, 0, frames,
                                     biggest, 0xffffffff, 0, 0, 0, w, h)
    strf = struct.pack('<IiiHH4sIiiII', 40, w, h, 1, 24, b'MJPG', w * h * 3, 0, 0, 0, 0)
    strl = b'strl' + b'strh' + struct.pack('<I', len(strh)) + strh + b'strf' + \
        struct.pack('<I', len(strf)) + strf
    hdrl = b'hdrl' + b'avih' + struct.pack('<I', len(avih)) + avih + b'LIST' + \
        struct.pack('<I', len(strl)) + strl
    head = b'RIFF' + struct.pack('<I', riff) + b'AVI ' + b'LIST' + struct.pack('<I', len(hdrl)) + hdrl
    junk = HEADER - len(head) - 8
    return head + b'JUNK' + struct.pack('<I', junk) + bytes(junk) + b'LIST' + \
        struct.pack('<I', movi) + b'movi'


def info(f):
    """(width, height, fps, frames, finished) from an open clip's header; ValueError if none."""
    f.seek(0)
    b = f.read(64 + 56 + 40)
    if len(b) < 160 or b[:4] != b'RIFF' or b[8:12] != b'AVI ':
        raise ValueError('not an AVI file')
    us, _, _, _, frames = struct.unpack_from('<5I', b, 32)
    w, h = struct.unpack_from('<II', b, 64)
    riff = struct.unpack_from('<I', b, 4)[0]
    return w, h, (1000000 + us // 2) // us if us else 0, frames, riff != OPEN


def first_frame(f):
    """(offset, size) of the first frame's JPEG, or None."""
    f.seek(FIRST)
    h = f.read(8)
    if len(h) < 8 or h[:4] != CHUNK:
        return None
    n = struct.unpack_from('<I', h, 4)[0]
    return (FIRST + 8, n) if n else None


class Writer:
    """One clip being written. add() queues a frame; step() writes at most `slice` bytes."""

    def __init__(self, f, w, h, fps, index):
        """index: a bytearray of 16 bytes per frame the clip may hold (the caller's, reused)."""
        self.f = f
        self.w = w
        self.h = h
        self.fps = fps
        self.index = index
        self.frames = 0
        self.end = FIRST             # file offset where the next chunk goes
        self.biggest = 0
        self.head = bytearray(8)
        self.head[:4] = CHUNK
        f.write(header(w, h, fps, 0, OPEN, 4, 0))

    def full(self):
        return self.frames * 16 >= len(self.index)

    def chunk_header(self, size):
        """Index the next frame of `size` bytes and return its chunk header (8 bytes)."""
        struct.pack_into('<4sIII', self.index, self.frames * 16, CHUNK, 0x10 if size else 0,
                         self.end - MOVI, size)
        struct.pack_into('<I', self.head, 4, size)
        self.frames += 1
        self.end += 8 + size + (size & 1)
        if size > self.biggest:
            self.biggest = size
        return self.head

    def close(self):
        """Write idx1 and the final header: the clip is complete."""
        f = self.f
        f.seek(self.end)
        n = self.frames * 16
        f.write(b'idx1' + struct.pack('<I', n))
        mv = memoryview(self.index)
        for off in range(0, n, 2048):
            f.write(mv[off:min(n, off + 2048)])
        f.seek(0)
        f.write(header(self.w, self.h, self.fps, self.frames, self.end + 8 + n - 8,
                       self.end - MOVI, self.biggest))
        f.flush()


def repair(f, size):
    """Finish a clip cut short: keep every whole chunk, rebuild sizes and idx1. -> frames kept,
    None if the clip was complete."""
    steps = repair_steps(f, size)
    for kept in steps:
        pass
    return kept


def repair_steps(f, size):
    """repair() in steps of 32 chunks (a generator: the caller may yield to the loop between
    steps); the last value is what repair() returns."""
    w, h, fps, _, done = info(f)
    if done:
        yield None
        return
    # pass 1: the whole chunks
    pos = FIRST
    frames = 0
    biggest = 0
    hb = bytearray(8)
    while pos + 8 <= size:
        f.seek(pos)
        if f.readinto(hb) < 8 or hb[:4] != CHUNK:
            break
        n = struct.unpack_from('<I', hb, 4)[0]
        nxt = pos + 8 + n + (n & 1)
        if nxt > size:
            break
        frames += 1
        biggest = max(biggest, n)
        pos = nxt
        if frames % 32 == 0:
            yield frames
    end = pos
    # pass 2: idx1 after the last whole chunk, written in batches
    out = bytearray(16 * 32)
    f.seek(end)
    f.write(b'idx1' + struct.pack('<I', frames * 16))
    wpos = end + 8
    pos = FIRST
    k = 0
    for i in range(frames):
        f.seek(pos)
        f.readinto(hb)
        n = struct.unpack_from('<I', hb, 4)[0]
        struct.pack_into('<4sIII', out, k * 16, CHUNK, 0x10 if n else 0, pos - MOVI, n)
        pos += 8 + n + (n & 1)
        k += 1
        if k == 32 or i == frames - 1:
            f.seek(wpos)
            f.write(memoryview(out)[:k * 16])
            wpos += k * 16
            k = 0
            yield frames
    riff_end = wpos
    if size - wpos >= 8:     # what is left of a torn chunk becomes JUNK inside the file
        j = (size - wpos - 8) & ~1
        f.seek(wpos)
        f.write(b'JUNK' + struct.pack('<I', j))
        riff_end = wpos + 8 + j
    f.seek(0)
    f.write(header(w, h, fps, frames, riff_end - 8, end - MOVI, biggest))
    f.flush()
    yield frames
