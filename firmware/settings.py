"""What stays in memory of the config once it is validated: plain attribute objects.

firmware.config (schema, defaults, checks) is dropped from the heap after boot; only these remain.
"""

FRAMESIZES = ('96X96', 'QQVGA', 'QCIF', 'HQVGA', '240X240', 'QVGA', 'CIF', 'HVGA', 'VGA', 'SVGA',
              'XGA', 'HD', 'SXGA', 'UXGA')


class Section:
    """Attribute access to one validated section: cfg.camera.quality."""

    def __init__(self, values):
        for k in values:
            setattr(self, k, values[k])

    def get(self, key, default=None):
        return getattr(self, key, default)
