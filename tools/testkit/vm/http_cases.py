# VM side of tests/test_http_client.py: runs the named cases of firmware/http_client against the
# servers the test started (ports and CA paths in the JSON file argv[1]), one JSON result line per case.
import asyncio
import json
import socket
import sys
import time

from firmware.net import http_client as h

with open(sys.argv[1]) as _f:
    P = json.load(_f)
SECRET = '/bot123:SECRETPATH/sendPhoto'
lookups = []


class CountingSocket:
    """http_client's view of the socket module, counting DNS lookups (built-ins can't be patched)."""

    def __getattr__(self, name):
        return getattr(socket, name)

    def getaddrinfo(self, *args):
        lookups.append(args[0])
        return socket.getaddrinfo(*args)


h.socket = CountingSocket()


def ctx(name):
    with open(P[name], 'rb') as f:
        return h.tls_context(f.read())


def url(port, path='/', scheme='http', host='127.0.0.1'):
    return '%s://%s:%d%s' % (scheme, host, port, path)


async def case(name):
    web = P['web']
    if name == 'get':
        return await h.request('GET', url(web, '/hello?x=1'))
    if name == 'chunked':
        return await h.request('GET', url(web, '/chunked'))
    if name == 'close_delimited':
        return await h.request('GET', url(P['raw'], '/close'))
    if name == 'status_404':
        return await h.request('GET', url(web, '/missing'))
    if name == 'parts':
        return await h.request('POST', url(web, '/echo'), {'Content-Type': 'text/plain'},
                               [b'abc', 'd\u00e9f', memoryview(b'xyz'), bytearray(b'!')])
    if name == 'upload_60k':
        pre = b'--b\r\nContent-Type: image/jpeg\r\n\r\n'
        big = bytes(range(256)) * 240  # 61440 bytes, alive for the whole request
        return await h.request('POST', url(web, '/sha'), None, [pre, big, b'\r\n--b--\r\n'])
    if name == 'upload_60k_joined':  # what a naive client does: one buffer for everything
        pre = b'--b\r\nContent-Type: image/jpeg\r\n\r\n'
        big = bytes(range(256)) * 240
        return await h.request('POST', url(web, '/sha'), None, b''.join([pre, big, b'\r\n--b--\r\n']))
    if name == 'https':
        return await h.request('GET', url(P['tls'], '/hello', 'https'), ssl=ctx('ca_pem'))
    if name == 'https_der':
        return await h.request('POST', url(P['tls'], '/echo', 'https', 'localhost'),
                               body=b'over tls', ssl=ctx('ca_der'))
    if name == 'unknown_ca':
        return await h.request('GET', url(P['tls'], SECRET, 'https'), ssl=ctx('rogue_der'))
    if name == 'default_roots':  # the shipped Telegram roots do not trust the test CA
        return await h.request('GET', url(P['tls'], SECRET, 'https'))
    if name == 'wrong_host':
        return await h.request('GET', url(P['tls_localhost_only'], SECRET, 'https'), ssl=ctx('ca_der'))
    if name == 'refused':
        return await h.request('GET', url(P['closed'], SECRET))
    if name == 'receive_timeout':
        return await h.request('GET', url(P['silent'], SECRET), timeout=1)
    if name == 'send_timeout':
        chunk = bytes(65536)
        return await h.request('POST', url(P['nonreader'], SECRET), body=[chunk] * 256, timeout=1)
    if name == 'too_big':
        return await h.request('GET', url(web, '/big'), max_body=1000)
    if name == 'too_big_chunked':
        return await h.request('GET', url(web, '/chunked'), max_body=10)
    if name == 'reset':
        return await h.request('GET', url(P['raw'], '/reset'))
    if name == 'garbage':
        return await h.request('GET', url(P['raw'], '/garbage'))
    if name == 'dns_cache':
        del lookups[:]
        for _ in range(3):
            await h.request('GET', url(web, '/hello', host='localhost'))
        n = len(lookups)
        try:  # a failed connect forgets the address, so the next call resolves again
            await h.request('GET', url(P['closed'], '/', host='localhost'))
        except OSError:
            pass
        try:
            await h.request('GET', url(P['closed'], '/', host='localhost'))
        except OSError:
            pass
        return {'lookups_for_3': n, 'lookups_after_failures': len(lookups) - n}
    if name == 'bad_url':
        return await h.request('GET', 'ftp://example.org/x')
    if name == 'concurrent':
        # three slow answers at once take about one answer's time: nothing blocks the loop
        t = time.ticks_ms()
        rs = await asyncio.gather(*[h.request('GET', url(web, '/slow')) for _ in range(3)])
        return {'statuses': [r.status for r in rs], 'ms': time.ticks_diff(time.ticks_ms(), t)}
    if name == 'tls_among_many_sockets':
        # TLS requests while other tasks wait on more and more sockets: the poller's fd array
        # grows under them (a TLS object registered with it would crash this VM)
        async def idle(i):
            ai = socket.getaddrinfo('127.0.0.1', P['silent'])[0]
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(ai[-1])
            except OSError:
                pass
            await asyncio.sleep_ms(20 * i)
            yield_ = asyncio.core._io_queue
            try:
                await asyncio.wait_for_ms(_wait_read(yield_, s), 1500)
            except asyncio.TimeoutError:
                pass
            s.close()
        tasks = [asyncio.create_task(idle(i)) for i in range(12)]
        rs = await asyncio.gather(*[h.request('GET', url(P['tls'], '/hello', 'https'), ssl=ctx('ca_der'))
                                    for _ in range(4)])
        await asyncio.gather(*tasks)
        return {'statuses': [r.status for r in rs]}
    raise ValueError('unknown case ' + name)


# async
def _wait_read(io, s):
    yield io.queue_read(s)


async def main():
    for name in sys.argv[2:]:
        out = {'case': name}
        t = time.ticks_ms()
        try:
            r = await case(name)
            if isinstance(r, dict):
                out.update(r)
            else:
                out.update({'status': r.status, 'headers': r.headers,
                            'body': r.body.decode('utf-8', 'replace') if len(r.body) < 4096 else len(r.body)})
        except Exception as e:
            out.update({'error': type(e).__name__, 'errno': getattr(e, 'errno', None),
                        'text': str(e.args[-1] if e.args else '')})
        out['ms'] = out.get('ms', time.ticks_diff(time.ticks_ms(), t))
        print(json.dumps(out))


asyncio.run(main())
