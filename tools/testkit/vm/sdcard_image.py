"""A FAT card image for the simulator's machine.SDCard (runs on the MicroPython VM).

  mkfs IMAGE SIZE_MB [FILL_MB]   a fresh FAT image; FILL_MB of it taken by /filler.bin (a full card)
  ls IMAGE                       every file with its size, one per line
  put IMAGE SRC DEST             copy file SRC (host) to DEST on the card, making its folders
"""
import os
import sys


class FileDev:
    def __init__(self, path):
        self.f = open(path, 'r+b')
        self.blocks = os.stat(path)[6] // 512

    def readblocks(self, n, buf):
        self.f.seek(n * 512)
        self.f.readinto(buf)

    def writeblocks(self, n, buf):
        self.f.seek(n * 512)
        self.f.write(buf)

    def ioctl(self, op, arg):
        if op == 4:
            return self.blocks
        if op == 5:
            return 512
        return 0


def walk(d):
    for name in sorted(os.listdir(d)):
        p = d + '/' + name
        if os.stat(p)[0] & 0x4000:
            walk(p)
        else:
            print(p[3:], os.stat(p)[6])


def main(cmd, image, *rest):
    if cmd == 'mkfs':
        with open(image, 'wb') as f:
            f.seek(int(rest[0]) * 1024 * 1024 - 1)
            f.write(b'\0')
        dev = FileDev(image)
        os.VfsFat.mkfs(dev)
        if len(rest) > 1:
            os.mount(os.VfsFat(dev), '/sd')
            chunk = bytes(64 * 1024)
            with open('/sd/filler.bin', 'wb') as f:
                for _ in range(int(rest[1]) * 16):
                    f.write(chunk)
            os.umount('/sd')
        dev.f.close()
    elif cmd == 'put':
        os.mount(os.VfsFat(FileDev(image)), '/sd')
        src, dest = rest
        parts = dest.strip('/').split('/')
        for i in range(1, len(parts)):
            try:
                os.mkdir('/sd/' + '/'.join(parts[:i]))
            except OSError:
                pass
        with open(src, 'rb') as f, open('/sd/' + '/'.join(parts), 'wb') as g:
            g.write(f.read())
        os.umount('/sd')
    elif cmd == 'ls':
        os.mount(os.VfsFat(FileDev(image)), '/sd')
        walk('/sd')


if __name__ == '__main__':
    main(*sys.argv[1:])
