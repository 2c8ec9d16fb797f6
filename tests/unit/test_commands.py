"""One command table: a command declared once shows up on the admin page, in LFCP and in the bot.

The check runs on the MicroPython VM: a new row is added to commands.TABLE at run time, as a
developer would add one line, and every front end is asked what it offers.
"""
import json
import os
import subprocess

from testkit.paths import MICROPYPATH, MICROPYTHON, ROOT

SCRIPT = r'''
import json, asyncio
from firmware.core import commands
commands.TABLE = commands.TABLE + (
    ('frobnicate', 'Camera and power', 'FROB', 'frobnicate', 1, 0, ('level',), 'frob',
     'a command added by the test'),)
from firmware.core.commands import Commands
from firmware.core.log import Log
from firmware.core.events import Bus
from firmware.config import schema
cfg = schema.parse(json.dumps({'device': {'name': 'cam'}, 'admin': {'password': 'test-admin-pw'},
                               'lfcp': {'key': 'k' * 24, 'servers': ['127.0.0.1:9']},
                               'telegram': {'token': '123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw',
                                            'chat_ids': [1]}}))
log = Log(20)
cmds = Commands(log)
ran = []
async def handler(args):
    ran.append(args)
    return 'frobbed'
for c in commands.TABLE:
    cmds.register(c[commands.NAME], handler)
from firmware.web.admin import AdminServer
admin = AdminServer(cfg.admin, cmds, lambda: {}, log)
from firmware.lfcp import client, codec
from firmware.telegram.bot import Telegram
tg = Telegram(cfg, log, Bus(log), cmds, None)
print(json.dumps({
    'admin': [c[commands.NAME] for c in cmds.available('admin')],
    'lfcp_types': list(codec.COMMANDS),
    'lfcp_map': client.CMD,
    'telegram': [c for c, _ in tg.menu()],
    'log': client.LOG_STEM.get('frobnicate'),
}))
'''


def test_a_new_command_appears_in_every_front_end(tmp_path):
    r = subprocess.run([MICROPYTHON, '-c', SCRIPT], cwd=str(tmp_path), capture_output=True,
                       text=True, timeout=30, env=dict(os.environ, MICROPYPATH=MICROPYPATH))
    assert r.returncode == 0, r.stdout + r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert 'frobnicate' in got['admin']
    assert 'FROB' in got['lfcp_types'] and got['lfcp_map']['FROB'] == 'frobnicate'
    assert 'frobnicate' in got['telegram']
    assert got['log'] == 'frob'
    # and every existing command is where its row says
    for name in ('arm', 'disarm', 'reboot', 'sleep', 'camera_on', 'photo', 'open'):
        assert name in got['admin']
    assert {'ENAL', 'DSAL', 'RST', 'DSLP', 'WCAM', 'SCAM', 'TLGS', 'TLGC', 'STAT', 'UPOP',
            'UPCL'} <= set(got['lfcp_types'])
    assert {'arm', 'disarm', 'status', 'photo', 'reboot', 'open', 'close', 'help', 'record',
            'record_stop'} == \
        set(got['telegram']) - {'frobnicate'}
    assert 'status' not in got['admin']   # the table says: not a button


def test_admin_page_buttons_come_from_the_table():
    with open(os.path.join(ROOT, 'firmware', 'web', 'www', 'admin.html')) as f:
        page = f.read()
    # api(): fetch() on location.origin (the page may be opened with the login in its URL)
    assert "api('/commands')" in page and 'data-a="arm"' not in page
