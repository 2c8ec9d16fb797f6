"""firmware/storage/avi.py on CPython (it uses only struct): the layout a player needs, and the
repair of a clip cut at any byte."""
import io
import struct

from firmware.storage import avi


def frames(n):
    # JPEG-like payloads of odd and even sizes (chunks are padded to even)
    return [b'\xff\xd8' + bytes([i]) * (100 + 37 * i) + b'\xff\xd9' for i in range(n)]


def write(fs, close=True):
    f = io.BytesIO()
    w = avi.Writer(f, 320, 240, 10, bytearray(16 * 64))
    for j in fs:
        f.write(w.chunk_header(len(j)))
        f.write(j)
        if len(j) & 1:
            f.write(b'\0')
    if close:
        w.close()
    return f, w


def parse(data):
    """(fps, total frames in avih, strh length, movi frames, idx1 entries) by walking the RIFF tree."""
    assert data[:4] == b'RIFF' and data[8:12] == b'AVI '
    riff_end = 8 + struct.unpack_from('<I', data, 4)[0]
    assert riff_end <= len(data)
    pos = 12
    out = {}
    while pos + 8 <= riff_end:
        cid, size = data[pos:pos + 4], struct.unpack_from('<I', data, pos + 4)[0]
        body = pos + 8
        if cid == b'LIST' and data[body:body + 4] == b'hdrl':
            us, _, _, _, total = struct.unpack_from('<5I', data, body + 12)
            out['fps'] = 1000000 // us
            out['total'] = total
            out['length'] = struct.unpack_from('<I', data, body + 12 + 56 + 12 + 8 + 32)[0]
        elif cid == b'LIST' and data[body:body + 4] == b'movi':
            p, n = body + 4, 0
            while p < body + size:
                assert data[p:p + 4] == b'00dc'
                k = struct.unpack_from('<I', data, p + 4)[0]
                p += 8 + k + (k & 1)
                n += 1
            assert p == body + size
            out['movi'] = n
            out['movi_at'] = body
        elif cid == b'idx1':
            out['idx'] = [struct.unpack_from('<4sIII', data, body + 16 * i) for i in range(size // 16)]
        pos = body + size + (size & 1)
    assert pos == riff_end
    return out


def test_a_closed_clip_has_every_part_a_player_reads():
    fs = frames(7)
    f, _ = write(fs)
    data = f.getvalue()
    p = parse(data)
    assert p['fps'] == 10 and p['total'] == p['length'] == p['movi'] == len(p['idx']) == 7
    for (cid, flags, off, size), j in zip(p['idx'], fs):
        assert cid == b'00dc' and flags == 0x10 and size == len(j)
        at = p['movi_at'] + off       # idx1 offsets count from the 'movi' fourcc
        assert data[at:at + 4] == b'00dc' and data[at + 8:at + 8 + size] == j
    assert avi.info(io.BytesIO(data)) == (320, 240, 10, 7, True)


def test_a_clip_cut_at_any_byte_is_repaired_to_its_whole_frames():
    fs = frames(5)
    full = write(fs, close=False)[0].getvalue()
    ends = [avi.FIRST]
    for j in fs:
        ends.append(ends[-1] + 8 + len(j) + (len(j) & 1))
    for cut in range(avi.FIRST - 3, len(full) + 1):
        f = io.BytesIO(full[:cut])
        kept = avi.repair(f, cut)
        whole = len([e for e in ends[1:] if e <= cut])
        assert kept == whole, cut
        p = parse(f.getvalue())
        assert p['total'] == p['length'] == p['movi'] == len(p['idx']) == whole, cut
        assert avi.repair(io.BytesIO(f.getvalue()), len(f.getvalue())) is None   # done once


def test_an_empty_slot_is_an_empty_chunk_without_the_keyframe_flag():
    f = io.BytesIO()
    w = avi.Writer(f, 320, 240, 10, bytearray(16 * 8))
    f.write(w.chunk_header(0))
    w.close()
    p = parse(f.getvalue())
    assert p['idx'][0][1] == 0 and p['idx'][0][3] == 0 and p['movi'] == 1
