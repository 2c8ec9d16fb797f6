"""The clips on the card, on the admin server (behind its authentication).

    GET  /clips                          the page (www/clips.html)
    GET  /clips/list                     JSON, newest first: name, time, reason, seconds, size...
    GET  /clips/<day>/<file>             the AVI (Range requests: 206, so a player can seek);
                                         ?download=1 to save it
    GET  /clips/<day>/<file>/thumb.jpg   its first frame
    GET  /clips/<day>/<file>/play        an MJPEG stream paced at the recorded rate (an <img>)
    POST /clips/<day>/<file>/delete      (DELETE on the file works too)

Files go out in slices read into one buffer per response and sent without a copy, so a
download never holds more than `SLICE` bytes of it in the heap nor stalls the stream.
"""
import asyncio
import os
import struct
import time

from microdot import Response

from firmware.core import aio
from firmware.storage import avi
from firmware.storage.clips import DIR
from firmware.web import common as web

SLICE = 4096
LIST_MAX = 200


def _safe(day, name):
    for part in (day, name):
        if not part or part[0] == '.' or '/' in part or '\\' in part:
            return False
    return name.endswith('.avi')


class FileBody:
    """Bytes [start, end) of a file, sent in slices straight from one buffer."""

    def __init__(self, req, path, start, end):
        self.stream = aio.connection(req)
        self.f = open(path, 'rb')
        self.f.seek(start)
        self.left = end - start
        self.buf = bytearray(min(SLICE, self.left) or 1)

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.left <= 0:
            await self.aclose()
            raise StopAsyncIteration
        mv = memoryview(self.buf)[:min(len(self.buf), self.left)]
        n = self.f.readinto(mv)
        if not n:
            await self.aclose()
            raise StopAsyncIteration
        self.left -= n
        await aio.send_all(self.stream, mv[:n])
        return b''

    async def aclose(self):
        if self.f:
            self.f.close()
            self.f = None


class Player:
    """The clip's frames as multipart/x-mixed-replace, one every 1/fps seconds."""

    def __init__(self, req, path, fps):
        self.stream = aio.connection(req)
        self.f = open(path, 'rb')
        self.pos = avi.FIRST
        self.period = 1000 // fps
        self.start = time.ticks_ms()
        self.n = 0
        self.head = bytearray(8)
        self.buf = bytearray(SLICE)

    def __aiter__(self):
        return self

    async def __anext__(self):
        f = self.f
        if f is None:
            raise StopAsyncIteration
        f.seek(self.pos)
        if f.readinto(self.head) < 8 or self.head[:4] != avi.CHUNK:
            await self.aclose()
            raise StopAsyncIteration
        size = struct.unpack_from('<I', self.head, 4)[0]
        self.pos += 8 + size + (size & 1)
        wait = time.ticks_diff(time.ticks_add(self.start, self.n * self.period), time.ticks_ms())
        if wait > 0:
            await asyncio.sleep_ms(wait)
        self.n += 1
        if size:
            await aio.send_all(self.stream, b'--frame\r\nContent-Type: image/jpeg\r\n'
                               b'Content-Length: %d\r\n\r\n' % size)
            mv = memoryview(self.buf)
            left = size
            while left:
                k = f.readinto(mv[:min(left, SLICE)])
                if not k:
                    break
                left -= k
                await aio.send_all(self.stream, mv[:k])
            await aio.send_all(self.stream, b'\r\n')
        return b''

    async def aclose(self):
        if self.f:
            self.f.close()
            self.f = None


def describe(root, day, name):
    path = '%s/%s/%s' % (root, day, name)
    size = os.stat(path)[6]
    with open(path, 'rb') as f:
        w, h, fps, frames, done = avi.info(f)
    if name == 'timelapse.avi':
        when, reason = day, 'time-lapse'
    else:
        hms, _, reason = name[:-4].partition('-')
        when = '%s %s:%s:%s' % (day, hms[:2], hms[2:4], hms[4:6])
    return {'name': day + '/' + name, 'day': day, 'time': when,
            'reason': reason, 'frames': frames, 'fps': fps,
            'seconds': frames / fps if fps else 0, 'size': size, 'width': w, 'height': h,
            'complete': done}


def byte_range(header, size):
    """(start, end) from a Range header; None: the whole file; ValueError: unsatisfiable."""
    if not header or not header.startswith('bytes=') or ',' in header:
        return None
    a, _, b = header[6:].strip().partition('-')
    if a == '':
        n = int(b)
        if n <= 0:
            raise ValueError
        return max(0, size - n), size
    start = int(a)
    end = int(b) + 1 if b else size
    if start >= size or end <= start:
        raise ValueError
    return start, min(end, size)


def mount(app, recorder, card, log):
    """Add the clip routes to the admin app; `recorder()` is the Recorder or None (no card yet)."""
    root = card.mount_point + '/' + DIR

    def check(day, name):
        if not card.mounted():
            return web.error(503, 'no clips: card %s' % card.state)
        if not _safe(day, name):
            return web.error(400, 'bad clip name')
        try:
            os.stat('%s/%s/%s' % (root, day, name))
        except OSError:
            return web.error(404, 'no such clip: %s/%s' % (day, name))
        return None

    @app.route('/clips')
    async def page(req):
        return web.page('clips.html')

    @app.route('/clips/list')
    async def listing(req):
        if not card.mounted():
            return Response({'card': card.status(), 'clips': []})
        out = []
        try:
            days = sorted(os.listdir(root), reverse=True)
        except OSError:
            days = []
        for day in days:
            if day[:1] == '.':
                continue
            try:
                names = sorted(os.listdir(root + '/' + day), reverse=True)
            except OSError:
                continue
            for name in names:
                if not name.endswith('.avi') or len(out) >= LIST_MAX:
                    continue
                try:
                    out.append(describe(root, day, name))
                except (OSError, ValueError) as e:
                    out.append({'name': day + '/' + name, 'error': str(e)})
            await asyncio.sleep_ms(0)
        rec = recorder()
        return Response({'card': card.status(), 'recording': rec.status()['recording'] if rec else None,
                         'clips': out})

    @app.route('/clips/<day>/<name>', methods=['GET', 'DELETE'])
    async def clip(req, day, name):
        refused = check(day, name)
        if refused:
            return refused
        path = '%s/%s/%s' % (root, day, name)
        if req.method == 'DELETE':
            return remove(path)
        size = os.stat(path)[6]
        h = {'Content-Type': 'video/x-msvideo', 'Accept-Ranges': 'bytes', 'Cache-Control': 'no-store'}
        if req.args.get('download'):
            h['Content-Disposition'] = 'attachment; filename=%s-%s' % (day, name)
        try:
            r = byte_range(req.headers.get('Range'), size)
        except ValueError:
            return web.error(416, 'range not satisfiable', {'Content-Range': 'bytes */%d' % size})
        status = 200
        start, end = 0, size
        if r:
            start, end = r
            status = 206
            h['Content-Range'] = 'bytes %d-%d/%d' % (start, end - 1, size)
        h['Content-Length'] = str(end - start)
        return Response(FileBody(req, path, start, end), status, h,
                        reason='Partial Content' if status == 206 else None)

    @app.route('/clips/<day>/<name>/thumb.jpg')
    async def thumb(req, day, name):
        refused = check(day, name)
        if refused:
            return refused
        path = '%s/%s/%s' % (root, day, name)
        with open(path, 'rb') as f:
            first = avi.first_frame(f)
        if first is None:
            return web.error(404, 'the clip has no frame yet')
        return Response(FileBody(req, path, first[0], first[0] + first[1]), 200,
                        {'Content-Type': 'image/jpeg', 'Content-Length': str(first[1]),
                         'Cache-Control': 'max-age=3600'})

    @app.route('/clips/<day>/<name>/play')
    async def play(req, day, name):
        refused = check(day, name)
        if refused:
            return refused
        path = '%s/%s/%s' % (root, day, name)
        with open(path, 'rb') as f:
            fps = avi.info(f)[2] or 10
        return Response(Player(req, path, fps), 200,
                        {'Content-Type': 'multipart/x-mixed-replace;boundary=frame',
                         'Cache-Control': 'no-store'})

    @app.route('/clips/<day>/<name>/delete', methods=['POST'])
    async def delete(req, day, name):
        refused = check(day, name)
        if refused:
            return refused
        return remove('%s/%s/%s' % (root, day, name))

    def remove(path):
        rec = recorder()
        try:
            if rec:
                rec.delete(path)
            else:
                os.remove(path)
        except OSError as e:
            return web.error(409, 'cannot delete: %s' % (e.args[0] if e.args else e))
        log('clip: deleted', path, '(by the owner)')
        return Response({'ok': True, 'deleted': path})
