"""Port 81: the MJPEG stream, in CameraWebServer's and mjpg-streamer's dialects.

Every viewer is fed the camera service's shared frame. A viewer sends the newest frame each time
its socket has sent most of the previous one (picked then, so a slow reader's own receive buffer
does not fill with the camera's frames back to back), so a slow viewer skips frames instead of
stalling the others or queueing them. Frames are written straight from the camera's buffer
through a memoryview: no viewer ever copies a frame (asyncio's Stream.write would copy the
unsent remainder of each one). The camera is told which frame each viewer sends (`cam.hold`),
and on a small heap waits for viewers that drifted apart rather than keep a frame alive for each.
A viewer that makes no progress for `STALL_MS` is dropped, and whatever error a disconnect raises,
the viewer's slot and socket are freed.
"""
import asyncio
import gc
import time

from microdot import Microdot, Response

from firmware.core import aio
from firmware.web import common as web

CWS_BOUNDARY = b'123456789000000000000987654321'   # Arduino CameraWebServer
MJPG_BOUNDARY = b'boundarydonotcross'              # mjpg-streamer
STALL_MS = 10000
LAG_MS = 3000           # a viewer this long on one frame ...
LAG_FRAMES = 3          # ... while the camera captured this many more is dropped
GREEDY_S = 10           # and its client's next request within this time gets 503 Retry-After


class PartHeaders:
    """The per-frame part header, built once per frame and boundary, shared by all viewers."""

    def __init__(self, cam, boundary):
        self.cam = cam
        self.boundary = boundary
        self.seq = -1
        self.data = b''

    def get(self, seq):
        if seq != self.seq:
            us = self.cam.stamp_us
            self.data = b'\r\n--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\nX-Timestamp: %d.%06d\r\n\r\n' % (
                self.boundary, len(self.cam.frame), us // 1000000, us % 1000000)
            self.seq = seq
        return self.data


class Viewer:
    """The body of one stream response: its one step sends every frame itself until the viewer
    goes (a step per frame would cost a round of microdot's write loop and asyncio's drain)."""

    def __init__(self, server, stream, headers, host):
        self.server = server
        self.host = host
        self.cam = server.cam
        self.stream = stream
        self.headers = headers
        self.seq = 0
        self.task = None
        self.progress = time.ticks_ms()
        self.sending = False
        self.poll = aio.room_poll(stream)
        self.sent = 0
        self.closed = False

    def __aiter__(self):
        self.task = asyncio.current_task()
        if self.cam.fresh():
            self.seq = self.cam.seq - 1   # the newest frame is recent: send it at once
        else:
            self.seq = self.cam.seq
        return self

    async def __anext__(self):
        if self.closed:
            raise StopAsyncIteration
        try:
            while True:
                # a coroutine per frame: this long-lived one would keep the last frame alive in a
                # stale stack slot (the GC scans them), and a small heap would then have no block
                # for the next capture
                await self._send_next()
        except (OSError, asyncio.CancelledError):
            # Gone, reset, timed out, or dropped by the stall reaper: end the response quietly;
            # microdot then closes the socket.
            await self.aclose()
            raise StopAsyncIteration
        except Exception:
            await self.aclose()  # whatever went wrong, the viewer's slot is freed
            raise

    async def _send_next(self):
        cam = self.cam
        self.seq = await cam.next_frame(self.seq)
        self.progress = time.ticks_ms()
        self.sending = True             # from here a reader that takes nothing is reaped
        if not aio.has_room(self.poll):
            # A frame is started only once the socket has sent most of the last one; when the
            # reader has not made that room yet, the frame is picked once it has: the one
            # picked before would be sent behind all the reader has yet to read.
            await aio.writable(aio.raw(self.stream))
            self.seq = await cam.next_frame(cam.seq - 1)
        seq = self.seq
        frame = cam.frame
        cam.hold(seq)
        try:
            await aio.send_all(self.stream, self.headers.get(seq))
            await aio.send_all(self.stream, frame)
        finally:
            cam.let_go(seq)         # gone, cancelled or sent: the camera may capture again
        self.sending = False
        self.sent += 1

    async def aclose(self):
        if not self.closed:
            self.closed = True
            self.cam.release()
            self.server.viewers.remove(self)
            self.server.served += self.sent


class StreamServer:
    def __init__(self, cam, cfg, log, guard=None):
        self.cam = cam
        self.cfg = cfg
        self.log = log
        self.viewers = []
        self.served = 0             # frames delivered by viewers that left
        self.refused = 0
        self.lagging = 0            # viewers dropped for falling behind
        self.greedy = {}            # host -> ticks_ms its viewer was dropped for lagging
        self.headers = {CWS_BOUNDARY: PartHeaders(cam, CWS_BOUNDARY),
                        MJPG_BOUNDARY: PartHeaders(cam, MJPG_BOUNDARY)}
        self.app = app = Microdot()
        web.common(app, log, guard)

        @app.route('/stream')
        async def stream(req):
            return self.start(req, CWS_BOUNDARY)

        @app.route('/')
        async def mjpg(req):
            action = req.args.get('action')
            if action == 'stream':
                return self.start(req, MJPG_BOUNDARY)
            if action == 'snapshot':
                return await web.snapshot(req, self.cam, 'snapshot.jpg')
            if action is None:
                return web.redirect('/stream')
            return web.error(400, 'unknown action %r: use stream or snapshot' % action)

    def make_room(self):
        """Called as a connection arrives. A viewer's request and response live as long as it
        watches; on a tight heap, collect first so they pack into the lowest holes instead of
        being strewn through the block the next frame needs (first fit puts them wherever garbage
        left room). On a roomy heap (PSRAM) the collection is skipped: it would only delay."""
        if gc.mem_free() < 4 * self.cam.frame_bytes():
            gc.collect()

    def start(self, req, boundary):
        if self.cam.state == 'off':
            return web.error(503, 'camera is off')
        if not self.cam.jpeg:
            return web.error(503, 'camera.format is GRAYSCALE: no JPEG to stream (detection only)')
        host = aio.host_of(req.client_addr)
        if self._greedy(host):
            self.refused += 1
            return web.error(503, 'your last viewer fell behind and was dropped: try again '
                             'later', {'Retry-After': str(GREEDY_S)})
        if len(self.viewers) >= self.cfg.max_viewers:
            self.refused += 1
            return web.error(503, 'too many viewers (%d), try again later' % self.cfg.max_viewers,
                             {'Retry-After': '5'})
        # The slot is taken here, before the answer's headers are sent (sending yields): a
        # burst of viewers all checking the limit first would otherwise all pass it, and the
        # late ones would get a 200 with no frames. The reaper frees a slot whose headers never
        # went out. The connection itself: req.stream is the request body once microdot read one.
        body = Viewer(self, aio.connection(req), self.headers[boundary], host)
        self.viewers.append(body)
        self.cam.acquire()
        return Response(body, headers={
            'Content-Type': 'multipart/x-mixed-replace;boundary=' + boundary.decode(),
            'Cache-Control': 'no-store, no-cache, must-revalidate, max-age=0',
            'Pragma': 'no-cache',
            'X-Framerate': str(self.cam.cfg.max_fps)})

    def _greedy(self, host):
        """True once for the next request of a client whose viewer was dropped for lagging."""
        t = self.greedy.pop(host, None)
        return t is not None and time.ticks_diff(time.ticks_ms(), t) < GREEDY_S * 1000

    async def reap(self):
        """Drop viewers that fell behind: one frame in sending for LAG_MS while the camera
        moved on, or could have at its rate, by LAG_FRAMES frames (a client reading a few KB/s
        holds a slot and a socket while others wait), or that took nothing for STALL_MS. Free a
        slot whose answer never started (its headers could not be sent)."""
        while True:
            await asyncio.sleep_ms(500)
            now = time.ticks_ms()
            for v in self.viewers:
                age = time.ticks_diff(now, v.progress)
                if v.task is None:
                    if age > STALL_MS:
                        await v.aclose()
                        break                       # the list changed: look again next time
                    continue
                if not v.sending:
                    continue
                # frames the camera captured since, or would have at its rate: when every viewer
                # is this slow, none is ready for a new frame and the camera waits for them
                behind = max(self.cam.seq - v.seq, age * self.cam.cfg.max_fps // 1000)
                if age > STALL_MS or (age > LAG_MS and behind >= LAG_FRAMES):
                    self.lagging += 1
                    self.log.warn('stream: dropping a viewer at %s: %d frames behind for %d ms'
                                  % (v.host, behind, age))
                    if len(self.greedy) >= 16:
                        self.greedy.clear()        # bounded; forgetting errs on the client's side
                    self.greedy[v.host] = now
                    v.progress = now
                    v.task.cancel()

    def status(self):
        return {'viewers': len(self.viewers), 'max_viewers': self.cfg.max_viewers,
                'frames_sent': self.served + sum(v.sent for v in self.viewers),
                'refused': self.refused, 'dropped_lagging': self.lagging}
