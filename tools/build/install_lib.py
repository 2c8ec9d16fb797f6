"""Copy the device files of the pinned microdot release from the venv into lib/.

The board gets exactly what the host tests ran against: one PyPI release, no second copy in git.
"""
import os
import shutil
import sys

import microdot

# The modules the firmware imports; the rest of microdot (ASGI, WSGI, templates) is CPython-only.
FILES = ('__init__.py', 'microdot.py', 'helpers.py', 'auth.py')


def main(dest):
    src = os.path.dirname(microdot.__file__)
    out = os.path.join(dest, 'microdot')
    os.makedirs(out, exist_ok=True)
    for name in FILES:
        shutil.copyfile(os.path.join(src, name), os.path.join(out, name))
    print('installed microdot', getattr(microdot, '__version__', ''), 'into', out)


if __name__ == '__main__':
    main(sys.argv[1] if len(sys.argv) > 1 else 'lib')
