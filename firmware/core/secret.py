"""Secrets compared in a time that depends neither on where they differ nor on their length,
and HMAC-SHA256 (MicroPython has no hmac module; micropython-lib's would be a package for ten
lines).

`same` hashes both sides first, so the compare always runs over two 32-byte digests: a guess of
the right length is no faster or slower to refuse than any other (passwords, URL keys).
`same_bytes` compares two MACs of known length.
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


def same_bytes(a, b):
    if len(a) != len(b):
        return False
    d = 0
    for i in range(len(a)):
        d |= a[i] ^ b[i]
    return d == 0


def hmac_sha256(key, msg):
    """RFC 2104 over SHA-256, in one call (lfcp/codec.py keeps the padded key for its
    per-datagram MACs)."""
    if isinstance(key, str):
        key = key.encode()
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key + bytes(64 - len(key))
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    inner.update(msg)
    outer = hashlib.sha256(bytes(b ^ 0x5c for b in key))
    outer.update(inner.digest())
    return outer.digest()


def valid_token(token):
    """A Telegram bot token's shape, <bot id>:<20+ of A-Z a-z 0-9 - _>, checked without echoing
    it ('' is valid: no token). Telegram's credentials and LFCP's TLGC both check it before the
    token goes to log.secret, where a non-token would garble every log line."""
    if token == '':
        return True
    bot, _, secret = token.partition(':')
    if not bot.isdigit() or len(secret) < 20:
        return False
    for c in secret:
        if not (c.isalpha() or c.isdigit() or c in '-_'):
            return False
    return True
