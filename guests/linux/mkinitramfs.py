#!/usr/bin/env python3
"""Writes a gzip-compressed initramfs (the kernel's "newc" cpio format) holding
busybox, /init and the device nodes a console needs before devtmpfs is up.
Writing the archive here rather than with cpio(1) lets it hold device nodes
without root.

    mkinitramfs.py BUSYBOX INIT OUT.gz
    mkinitramfs.py --extract IN.gz PATH OUT   # copy one file back out

The second form lets guests/linux/fetch recover busybox from an initramfs
it built earlier without downloading the packages again.
"""
import gzip
import stat
import sys

DIRS = ["bin", "sbin", "dev", "proc", "sys", "tmp", "etc", "root", "usr", "usr/bin", "usr/sbin"]
# (path, major, minor): the console, and /dev/null for scripts before devtmpfs.
CHAR_DEVICES = [("dev/console", 5, 1), ("dev/null", 1, 3), ("dev/ttyS0", 4, 64)]


class Newc:
    """A cpio archive in the kernel's newc format (Documentation/driver-api/early-userspace)."""

    def __init__(self):
        self.out = bytearray()
        self.ino = 1

    def add(self, name, mode, data=b"", rdev=(0, 0), nlink=1):
        fields = [self.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
        self.ino += 1
        self.out += b"070701" + b"".join(b"%08X" % f for f in fields)
        self.out += name.encode() + b"\0"
        self.pad()
        self.out += data
        self.pad()

    def pad(self):
        self.out += b"\0" * (-len(self.out) % 4)

    def finish(self):
        self.add("TRAILER!!!", 0)
        return bytes(self.out)


def extract(archive, wanted):
    """The contents of the regular file `wanted` in a newc archive, or None."""
    at = 0
    while at + 110 <= len(archive):
        if archive[at:at + 6] not in (b"070701", b"070702"):
            raise ValueError("not a newc cpio archive at offset %d" % at)
        fields = [int(archive[at + 6 + 8 * i:at + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name_at = at + 110
        name = archive[name_at:name_at + namesize - 1].decode()
        data_at = name_at + namesize + (-(110 + namesize) % 4)
        if name == "TRAILER!!!":
            return None
        if name.lstrip("/") == wanted.lstrip("/") and stat.S_ISREG(mode):
            return archive[data_at:data_at + size]
        at = data_at + size + (-size % 4)
    return None


def main():
    if sys.argv[1] == "--extract":
        src, wanted, out = sys.argv[2:5]
        with open(src, "rb") as f:
            data = extract(gzip.decompress(f.read()), wanted)
        if data is None:
            sys.exit("%s holds no %s" % (src, wanted))
        with open(out, "wb") as f:
            f.write(data)
        return
    busybox, init, out = sys.argv[1:4]
    a = Newc()
    for d in DIRS:
        a.add(d, stat.S_IFDIR | 0o755, nlink=2)
    for path, major, minor in CHAR_DEVICES:
        a.add(path, stat.S_IFCHR | 0o600, rdev=(major, minor))
    with open(busybox, "rb") as f:
        a.add("bin/busybox", stat.S_IFREG | 0o755, f.read())
    a.add("bin/sh", stat.S_IFLNK | 0o777, b"busybox")
    with open(init, "rb") as f:
        a.add("init", stat.S_IFREG | 0o755, f.read())
    with open(out, "wb") as f:
        # mtime 0: the same inputs give the same bytes.
        f.write(gzip.compress(a.finish(), compresslevel=9, mtime=0))


if __name__ == "__main__":
    main()
