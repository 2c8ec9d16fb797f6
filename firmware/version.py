# The firmware's version: the one place it is written (bundles, /status, the update page).
VERSION = '0.9.0'
