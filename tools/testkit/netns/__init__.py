"""Helpers for the UPnP tests: the MicroPython driver process, and network namespaces."""
