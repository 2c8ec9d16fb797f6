# The baseline of the streaming benchmark, run on the MicroPython VM: the plain microdot MJPEG
# loop most ESP32-CAM MicroPython examples use (every viewer calls camera.capture() itself).
import sys

import camera
from microdot import Microdot, Response

camera.init(0, format=camera.JPEG, framesize=getattr(camera, 'FRAME_' + sys.argv[2]))
app = Microdot()


class Frames:
    def __aiter__(self):
        return self

    async def __anext__(self):
        f = camera.capture()
        return b'--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n' % len(f) + f + b'\r\n'


@app.route('/stream')
async def stream(req):
    return Response(Frames(), headers={'Content-Type': 'multipart/x-mixed-replace;boundary=frame'})


app.run(host='127.0.0.1', port=int(sys.argv[1]))
