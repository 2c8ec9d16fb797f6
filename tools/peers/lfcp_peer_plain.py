"""A plain LFCP management server written only from ../shared/reference/lfcp.md.

It knows nothing of sequence numbers or MACs: the 8-field CSV, at most 128 bytes, unused fields
`0`; it answers every device message except ACK with `ACK,<type answered>` (p7 = the id the
message carried, so an alarm is acknowledged by its id) or with the next command from its list; it prints one JSON line per event, so a test (or a person) can follow the exchange.

    python tools/peers/lfcp_peer_plain.py --port 8443 --command ENAL --command TLGC/123:abc/42
"""
import argparse
import json
import socket
import sys
import time

TYPES_FROM_DEVICE = ('HEARTBEAT', 'ACK', 'ERR', 'LOG', 'MOAL')


def build(name, typ, params=()):
    fields = [name, typ] + list(params)
    fields += ['0'] * (8 - len(fields))
    return ','.join(fields).encode('ascii')


def parse(data):
    if len(data) > 128:
        return None
    try:
        text = data.decode('ascii')
    except UnicodeDecodeError:
        return None
    fields = text.split(',')
    if len(fields) != 8 or any(len(f) > 64 for f in fields):
        return None
    return fields


def emit(**event):
    event['time'] = round(time.time(), 3)
    print(json.dumps(event), flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--host', default='127.0.0.1')
    p.add_argument('--port', type=int, default=8443)
    p.add_argument('--command', action='append', default=[],
                   help='TYPE[/param2[/param3...]] sent, in order, as replies to the device')
    p.add_argument('--seconds', type=float, default=60)
    args = p.parse_args(argv)
    todo = [c.split('/') for c in args.command]

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((args.host, args.port))
    s.settimeout(0.2)
    emit(event='listening', port=s.getsockname()[1])
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        try:
            data, addr = s.recvfrom(2048)
        except socket.timeout:
            continue
        fields = parse(data)
        if fields is None or fields[1] not in TYPES_FROM_DEVICE:
            emit(event='dropped', size=len(data))
            continue
        name, typ = fields[0], fields[1]
        emit(event='received', device=name, type=typ, fields=fields[2:])
        if typ == 'ACK':  # an ACK is never answered
            continue
        if todo:
            cmd = todo.pop(0)
            s.sendto(build(name, cmd[0], cmd[1:]), addr)
            emit(event='sent', device=name, type=cmd[0])
        else:  # ACK naming what it answers (docs/protocol.md 3): a MOAL by its alarm id
            s.sendto(build(name, 'ACK', [typ, '0', '0', '0', '0', fields[7]]), addr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
