# The `ssl` module of MicroPython 1.21 (extmod/modssl_mbedtls.c as of v1.21.0), for
# SIM_MICROPYTHON=1.21 (mpy_api.install() puts it in sys.modules): an SSLContext with only
# `verify_mode` and wrap_socket(sock, *, server_side, do_handshake_on_connect, server_hostname),
# no load_verify_locations()/load_cert_chain() (those came in 1.22, f3f215e9bd, with `tls`);
# CA data and keys only through the module's wrap_socket(sock, *, key, cert, server_side,
# server_hostname, cert_reqs, cadata, do_handshake). Built on the VM's `tls`, which does the
# TLS itself. Not a module of the real board.
import tls as _tls

PROTOCOL_TLS_CLIENT = _tls.PROTOCOL_TLS_CLIENT
PROTOCOL_TLS_SERVER = _tls.PROTOCOL_TLS_SERVER
CERT_NONE = _tls.CERT_NONE
CERT_OPTIONAL = _tls.CERT_OPTIONAL
CERT_REQUIRED = _tls.CERT_REQUIRED


class SSLContext:
    def __init__(self, protocol):
        self._ctx = _tls.SSLContext(protocol)
        self._ctx.verify_mode = CERT_NONE   # 1.21: no verification unless asked for

    @property
    def verify_mode(self):
        return self._ctx.verify_mode

    @verify_mode.setter
    def verify_mode(self, mode):
        self._ctx.verify_mode = mode

    def wrap_socket(self, sock, *, server_side=False, do_handshake_on_connect=True,
                    server_hostname=None):
        return self._ctx.wrap_socket(sock, server_side=server_side,
                                     do_handshake_on_connect=do_handshake_on_connect,
                                     server_hostname=server_hostname)


def wrap_socket(sock, *, key=None, cert=None, server_side=False, server_hostname=None,
                cert_reqs=CERT_NONE, cadata=None, do_handshake=True):
    ctx = _tls.SSLContext(PROTOCOL_TLS_SERVER if server_side else PROTOCOL_TLS_CLIENT)
    if key is not None:
        ctx.load_cert_chain(cert, key)
    ctx.verify_mode = cert_reqs
    if cadata is not None:
        for der in _ders(cadata):
            ctx.load_verify_locations(der)
    return ctx.wrap_socket(sock, server_side=server_side, do_handshake_on_connect=do_handshake,
                           server_hostname=server_hostname)


def _ders(cadata):
    # The board's mbedTLS (ESP-IDF) reads a PEM text of several certificates; this VM's is built
    # without a PEM parser, so the stand-in decodes it and hands each certificate over as DER.
    if isinstance(cadata, str):
        cadata = cadata.encode()
    if b"-----BEGIN" not in cadata:
        return [cadata]
    import binascii
    out = []
    for block in cadata.split(b"-----BEGIN CERTIFICATE-----")[1:]:
        out.append(binascii.a2b_base64(block[:block.find(b"-----END")]))
    return out
