#!/usr/bin/env python3
"""Synthetic camera scene for the simulator (CPython + Pillow).

`python tools/sim/scene.py OUTDIR` renders, once, the frames the simulated camera serves:

    OUTDIR/<W>x<H>/still/NNNN.jpg    empty room, sensor noise differs per frame
    OUTDIR/<W>x<H>/motion/NNNN.jpg   a person crosses the room over the sequence
    OUTDIR/<W>x<H>/{still,motion}/NNNN.gray   raw 8-bit luma (sizes up to QVGA only),
                                     what camera.capture() returns in GRAYSCALE format

for every camera FRAME_* size (96x96 .. 1600x1200). Frames are baseline JPEG with 4:2:0
chroma subsampling, quality 85 (about the OV2640's quality 12). A size whose directory has
a `.complete` marker is skipped, so a second run does nothing.

Importable API (for labelled test sets):

    render(width, height, t=0.0, objects=None, light=1.0, noise=2.0, seed=0) -> PIL.Image
    person(x, y=0.92, height=0.55, color=..., phase=0.0) -> object dict
    crossing(t, ...) -> [person]         the standard motion sequence at time t in [0, 1)
    encode_jpeg(img, quality=85) -> bytes
    FRAME_SIZES                            [(name, width, height)] in FRAME_* order

Coordinates of objects are normalised to the 4:3 room view: x 0..1 left to right, y 0..1
top to bottom (y = the feet line), height as a fraction of the view height. Square and
16:9 sizes are centre crops of the 4:3 view, as the OV2640 produces them.
"""
import io
import os
import random
import statistics
import sys
import time

from PIL import Image, ImageChops, ImageDraw, ImageFilter

FRAME_SIZES = [
    ("96X96", 96, 96), ("QQVGA", 160, 120), ("QCIF", 176, 144), ("HQVGA", 240, 176),
    ("240X240", 240, 240), ("QVGA", 320, 240), ("CIF", 400, 296), ("HVGA", 480, 320),
    ("VGA", 640, 480), ("SVGA", 800, 600), ("XGA", 1024, 768), ("HD", 1280, 720),
    ("SXGA", 1280, 1024), ("UXGA", 1600, 1200),
]
GRAY_MAX_PIXELS = 320 * 240  # .gray files up to QVGA
JPEG_QUALITY = 85

_bg_cache = {}
_noise_lut = {}


def _view_size(w, h):
    """The 4:3 canvas that covers w x h (then centre-cropped)."""
    cw = max(w, (h * 4 + 2) // 3)
    ch = (cw * 3 + 3) // 4
    if ch < h:
        ch = h
        cw = (h * 4 + 2) // 3
    return cw, ch


def _vgrad(w, h, top, bottom):
    """Vertical gradient image from colour `top` to `bottom`."""
    mask = Image.linear_gradient("L").resize((max(w, 1), max(h, 1)))
    return Image.composite(Image.new("RGB", (w, h), bottom), Image.new("RGB", (w, h), top), mask)


def _background(cw, ch):
    key = (cw, ch)
    if key in _bg_cache:
        return _bg_cache[key]
    W, H = cw, ch

    def X(v):
        return int(round(v * W))

    def Y(v):
        return int(round(v * H))

    img = _vgrad(W, H, (196, 188, 172), (150, 142, 128))  # back wall
    d = ImageDraw.Draw(img)
    horizon = 0.62
    # floor: trapezoid, wooden boards converging to the vanishing point
    floor = _vgrad(W, H - Y(horizon), (120, 92, 64), (88, 64, 42))
    img.paste(floor, (0, Y(horizon)))
    vx, vy = 0.5, 0.30
    for i in range(-8, 9):
        x_bottom = 0.5 + i * 0.14
        x_top = vx + (x_bottom - vx) * (horizon - vy) / (1.0 - vy)
        d.line([(X(x_top), Y(horizon)), (X(x_bottom), H)], fill=(72, 52, 34), width=max(1, W // 400))
    # side walls (darker), ceiling band
    d.polygon([(0, 0), (X(0.12), Y(0.08)), (X(0.12), Y(horizon)), (0, H)], fill=(160, 152, 138))
    d.polygon([(W, 0), (X(0.88), Y(0.08)), (X(0.88), Y(horizon)), (W, H)], fill=(142, 135, 122))
    d.polygon([(0, 0), (W, 0), (X(0.88), Y(0.08)), (X(0.12), Y(0.08))], fill=(214, 210, 200))
    d.line([(X(0.12), Y(horizon)), (X(0.88), Y(horizon))], fill=(96, 80, 62), width=max(1, W // 300))
    # window with sky and frame
    wx0, wy0, wx1, wy1 = X(0.56), Y(0.16), X(0.80), Y(0.46)
    sky = _vgrad(wx1 - wx0, wy1 - wy0, (150, 190, 235), (225, 235, 240))
    img.paste(sky, (wx0, wy0))
    fw = max(1, W // 120)
    d.rectangle([wx0, wy0, wx1, wy1], outline=(238, 236, 230), width=fw)
    d.line([((wx0 + wx1) // 2, wy0), ((wx0 + wx1) // 2, wy1)], fill=(238, 236, 230), width=fw)
    d.line([(wx0, (wy0 + wy1) // 2), (wx1, (wy0 + wy1) // 2)], fill=(238, 236, 230), width=fw)
    # a tree outside
    d.ellipse([X(0.62), Y(0.30), X(0.70), Y(0.42)], fill=(90, 130, 80))
    # door on the left wall
    d.polygon([(X(0.03), Y(0.20)), (X(0.09), Y(0.24)), (X(0.09), Y(0.66)), (X(0.03), Y(0.74))],
              fill=(122, 96, 70), outline=(80, 60, 40))
    # picture frame
    d.rectangle([X(0.22), Y(0.20), X(0.36), Y(0.32)], fill=(70, 100, 120), outline=(60, 44, 30),
                width=max(1, W // 200))
    d.polygon([(X(0.23), Y(0.31)), (X(0.28), Y(0.24)), (X(0.32), Y(0.28)), (X(0.35), Y(0.31))],
              fill=(200, 190, 150))
    # sofa
    r = max(1, W // 80)
    d.rounded_rectangle([X(0.16), Y(0.48), X(0.46), Y(0.70)], radius=r, fill=(70, 84, 112))
    d.rounded_rectangle([X(0.14), Y(0.56), X(0.20), Y(0.72)], radius=r, fill=(60, 72, 98))
    d.rounded_rectangle([X(0.42), Y(0.56), X(0.48), Y(0.72)], radius=r, fill=(60, 72, 98))
    d.rectangle([X(0.20), Y(0.60), X(0.42), Y(0.66)], fill=(82, 98, 128))
    # low table with a lamp
    d.rectangle([X(0.60), Y(0.66), X(0.80), Y(0.69)], fill=(110, 76, 48))
    d.rectangle([X(0.62), Y(0.69), X(0.635), Y(0.78)], fill=(90, 62, 40))
    d.rectangle([X(0.765), Y(0.69), X(0.78), Y(0.78)], fill=(90, 62, 40))
    d.rectangle([X(0.695), Y(0.56), X(0.705), Y(0.66)], fill=(60, 60, 60))
    d.polygon([(X(0.67), Y(0.56)), (X(0.73), Y(0.56)), (X(0.715), Y(0.50)), (X(0.685), Y(0.50))],
              fill=(235, 220, 170))
    # rug
    d.ellipse([X(0.30), Y(0.78), X(0.74), Y(0.94)], fill=(130, 50, 50))
    d.ellipse([X(0.34), Y(0.80), X(0.70), Y(0.92)], outline=(170, 120, 80), width=max(1, W // 300))
    # static texture (plaster, wood grain), then a mild lens softness and vignette
    rng = random.Random(12345)
    tw, th = max(8, W // 8), max(6, H // 8)
    tex = Image.frombytes("L", (tw, th), rng.randbytes(tw * th)).resize((W, H), Image.BILINEAR)
    tex = tex.point(lambda v: 128 + (v - 128) // 12)
    img = ImageChops.add(img, Image.merge("RGB", (tex, tex, tex)), 1.0, -128)
    img = img.filter(ImageFilter.GaussianBlur(max(0.4, W / 1400)))
    vign = Image.radial_gradient("L").resize((W, H)).point(lambda v: 255 - v * 70 // 255)
    img = ImageChops.multiply(img, Image.merge("RGB", (vign, vign, vign)))
    _bg_cache[key] = img
    return img


def person(x, y=0.92, height=0.55, color=(60, 90, 60), phase=0.0, skin=(205, 160, 130)):
    """A person standing with the feet at (x, y), `height` of the view tall."""
    return {"kind": "person", "x": x, "y": y, "h": height, "color": color, "phase": phase,
            "skin": skin}


def box(x, y, w, h, color=(200, 60, 40)):
    """A plain rectangle object (x, y = centre), e.g. for size/speed sweeps."""
    return {"kind": "box", "x": x, "y": y, "w": w, "h": h, "color": color}


def crossing(t, height=0.55, y=0.92):
    """The standard motion sequence: a person walks across the room, t in [0, 1)."""
    return [person(-0.12 + 1.24 * (t % 1.0), y=y, height=height, phase=t * 6.0)]


def _draw_object(d, o, W, H):
    def X(v):
        return int(round(v * W))

    def Y(v):
        return int(round(v * H))

    if o.get("kind") == "box":
        x, y, w, h = o["x"], o["y"], o["w"], o["h"]
        d.rectangle([X(x - w / 2), Y(y - h / 2), X(x + w / 2), Y(y + h / 2)], fill=tuple(o["color"]))
        return
    x, y, h = o["x"], o["y"], o["h"]
    c = tuple(o.get("color", (60, 90, 60)))
    skin = tuple(o.get("skin", (205, 160, 130)))
    dark = tuple(max(0, v - 25) for v in c)
    trousers = (45, 45, 60)
    s = h * H / W  # height in units of view width
    ph = o.get("phase", 0.0)
    import math
    swing = math.sin(ph * math.pi) * 0.08 * s
    hw = 0.11 * s  # half shoulder width
    # legs
    lw = max(1, int(0.07 * s * W))
    hip_y = y - 0.47 * h
    d.line([(X(x - 0.03 * s), Y(hip_y)), (X(x - 0.03 * s + swing), Y(y))], fill=trousers, width=lw)
    d.line([(X(x + 0.03 * s), Y(hip_y)), (X(x + 0.03 * s - swing), Y(y))], fill=trousers, width=lw)
    # torso
    d.rounded_rectangle([X(x - hw), Y(y - 0.82 * h), X(x + hw), Y(hip_y + 0.02 * h)],
                        radius=max(1, int(0.04 * s * W)), fill=c)
    # arms
    aw = max(1, int(0.05 * s * W))
    d.line([(X(x - hw), Y(y - 0.80 * h)), (X(x - hw - swing * 0.6), Y(y - 0.45 * h))], fill=dark, width=aw)
    d.line([(X(x + hw), Y(y - 0.80 * h)), (X(x + hw + swing * 0.6), Y(y - 0.45 * h))], fill=dark, width=aw)
    # head
    hr = 0.065 * s
    d.ellipse([X(x - hr), Y(y - h), X(x + hr), Y(y - h) + int(2 * hr * W)], fill=skin)
    d.chord([X(x - hr), Y(y - h), X(x + hr), Y(y - h) + int(2 * hr * W)], 180, 360, fill=(60, 40, 30))


def _noise_image(w, h, sigma, seed):
    if sigma <= 0:
        return None
    lut = _noise_lut.get(sigma)
    if lut is None:
        nd = statistics.NormalDist(0, sigma)
        lut = [max(0, min(255, int(round(128 + nd.inv_cdf((i + 0.5) / 256))))) for i in range(256)]
        _noise_lut[sigma] = lut
    rng = random.Random(seed)
    n = Image.frombytes("L", (w, h), rng.randbytes(w * h)).point(lut)
    return n


def render(width, height, t=0.0, objects=None, light=1.0, noise=2.0, seed=0):
    """Render one camera frame: the room, `objects` (see person()/box()), global `light`
    (1.0 = normal; 0.2 = dusk), per-pixel sensor `noise` (sigma in grey levels, with a
    little chroma noise) different for each `seed`. `t` is kept for callers that animate
    (objects are explicit; see crossing())."""
    cw, ch = _view_size(width, height)
    img = _background(cw, ch).copy()
    if objects:
        d = ImageDraw.Draw(img)
        for o in objects:
            _draw_object(d, o, cw, ch)
    if (cw, ch) != (width, height):
        x0 = (cw - width) // 2
        y0 = (ch - height) // 2
        img = img.crop((x0, y0, x0 + width, y0 + height))
    if light != 1.0:
        img = img.point(lambda v: min(255, int(v * light)))
    n = _noise_image(width, height, noise, seed)
    if n is not None:
        nc = _noise_image(width, height, noise * 0.5, seed + 7919)
        img = ImageChops.add(img, Image.merge("RGB", (n, nc, n)), 1.0, -128)
    return img


def encode_jpeg(img, quality=JPEG_QUALITY):
    """Baseline JPEG, 4:2:0 subsampling, like the OV2640's encoder."""
    b = io.BytesIO()
    img.save(b, "JPEG", quality=quality, subsampling=2, optimize=False, progressive=False)
    return b.getvalue()


def frame_counts(width, height):
    """(motion, still) frames generated for a size."""
    if width * height <= 800 * 600:
        return 24, 8
    return 8, 4


def generate_size(out, width, height, verbose=True):
    d = os.path.join(out, "%dx%d" % (width, height))
    marker = os.path.join(d, ".complete")
    if os.path.exists(marker):
        return False
    n_motion, n_still = frame_counts(width, height)
    gray = width * height <= GRAY_MAX_PIXELS
    for kind, n in (("motion", n_motion), ("still", n_still)):
        sub = os.path.join(d, kind)
        os.makedirs(sub, exist_ok=True)
        for i in range(n):
            objs = crossing(i / n) if kind == "motion" else None
            img = render(width, height, i / n, objects=objs, seed=(width * 1009 + height) * 100 + i * 2 + (kind == "motion"))
            with open(os.path.join(sub, "%04d.jpg" % i), "wb") as f:
                f.write(encode_jpeg(img))
            if gray:
                with open(os.path.join(sub, "%04d.gray" % i), "wb") as f:
                    f.write(img.convert("L").tobytes())
    with open(marker, "w") as f:
        f.write("%d motion, %d still\n" % (n_motion, n_still))
    if verbose:
        print("scene: %dx%d: %d motion + %d still frames" % (width, height, n_motion, n_still))
    return True


def generate(out, sizes=None, verbose=True):
    t0 = time.time()
    os.makedirs(out, exist_ok=True)
    done = 0
    for name, w, h in FRAME_SIZES:
        if sizes and name not in sizes and (w, h) not in sizes:
            continue
        done += generate_size(out, w, h, verbose)
    if verbose:
        print("scene: %s: %d sizes rendered in %.1f s" % (out, done, time.time() - t0))


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__)
        return 2
    generate(argv[1], sizes=argv[2:] or None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
