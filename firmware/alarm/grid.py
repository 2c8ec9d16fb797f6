"""The detector's own grid: detection keeps its size when the camera's frame size changes.

A detector rebuilt for every new frame size spends its warm-up frames learning, so flipping the
frame size twice a second kept an armed alarm blind. Instead, while armed, the thumbnail of a
frame of another size is resampled (nearest cell) onto the grid the detector was built for, and
the detector goes on comparing: a view that really changed shows up as motion, i.e. an
unexplained reconfiguration is treated as an event, never as a reason to stop looking.
"""
import micropython


@micropython.viper
def _fit(src: ptr8, sw: int, sh: int, dst: ptr8, dw: int, dh: int):
    y = 0
    while y < dh:
        row = ((2 * y + 1) * sh // (2 * dh)) * sw
        o = y * dw
        x = 0
        while x < dw:
            dst[o + x] = src[row + (2 * x + 1) * sw // (2 * dw)]
            x += 1
        y += 1


class Grid:
    """A thumbnail of the detector's size (.luma, .w8, .h8, like the extractor's)."""

    def __init__(self, w8, h8):
        self.w8 = w8
        self.h8 = h8
        self.luma = bytearray(w8 * h8)

    def fit(self, x):
        """Resample extractor `x`'s thumbnail onto this grid; allocates nothing."""
        _fit(x.luma, x.w8, x.h8, self.luma, self.w8, self.h8)
        return self
