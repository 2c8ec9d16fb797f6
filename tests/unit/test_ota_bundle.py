"""The bundle's authentication and manifest checks, on the host (firmware/ota/install.py is
plain Python where it does not touch the flash)."""
import hashlib
import hmac

import pytest

from firmware.core import secret
from firmware.ota import install


@pytest.mark.parametrize('key', ['k' * 16, 'a-longer-update-key-' * 5, 'ü-key-0123456789'])
def test_the_boards_hmac_is_rfc_2104(key):
    msg = bytes(range(256)) * 3
    assert secret.hmac_sha256(key, msg) == hmac.new(key.encode(), msg, hashlib.sha256).digest()


def test_tag_comparison_needs_every_byte():
    tag = secret.hmac_sha256('k' * 16, b'manifest')
    assert secret.same_bytes(tag, bytes(tag))
    assert not secret.same_bytes(tag, tag[:-1] + bytes([tag[-1] ^ 1]))
    assert not secret.same_bytes(tag, tag[:31])


@pytest.mark.parametrize('path', ['../boot.py', '/firmware/app.mpy', 'main.py', 'boot.py',
                                  'firmware/../../x', 'firmware//app.mpy', 'lib\\x.mpy',
                                  'config.json', 'firmware/./app.mpy'])
def test_a_manifest_may_only_write_firmware_and_lib(path):
    m = {'version': '1', 'files': [['firmware/app.mpy', 1, 'x'], [path, 1, 'x']]}
    with pytest.raises(install.Refused, match='bad file entry'):
        install.check_manifest(m)


def test_a_manifest_for_another_micropython_is_refused():
    m = {'version': '1', 'micropython': '0.0.1', 'mpy': 6, 'files': [['firmware/app.mpy', 1, 'x']]}
    with pytest.raises(install.Refused, match='built for MicroPython 0.0.1'):
        install.check_manifest(m)
