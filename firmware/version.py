"""The firmware's version, as Home Assistant and the status show it."""
VERSION = '1.0.0'
