# The firmware's version: the one place it is written (bundles, /status, the update page,
# Home Assistant).
VERSION = '1.0.0'
