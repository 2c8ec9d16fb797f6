"""Secrets compared in a time that depends neither on where they differ nor on their length.

Both sides are hashed first, so the compare always runs over two 32-byte digests: a guess of the
right length is no faster or slower to refuse than any other (passwords, URL keys).
"""
import hashlib


def digest(text):
    if isinstance(text, str):
        text = text.encode()
    return hashlib.sha256(text).digest()


def same(a, b):
    x = digest(a)
    y = digest(b)
    d = 0
    for i in range(32):
        d |= x[i] ^ y[i]
    return d == 0
