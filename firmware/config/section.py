"""What stays in memory of the config once it is validated: plain attribute objects.

firmware/config/schema.py (schema, defaults, checks) is dropped from the heap after boot; only
these remain.
"""

class Section:
    """Attribute access to one validated section: cfg.camera.quality."""

    def __init__(self, values):
        for k in values:
            setattr(self, k, values[k])

    def get(self, key, default=None):
        return getattr(self, key, default)
