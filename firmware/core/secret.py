"""Secrets compared in a time that does not depend on where they differ (passwords, URL keys)."""


def same(a, b):
    if len(a) != len(b):
        return False
    d = 0
    for i in range(len(a)):
        d |= ord(a[i]) ^ ord(b[i])
    return d == 0
