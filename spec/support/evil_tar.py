#!/usr/bin/env python3
"""Crafted tar archives a hostile sandbox could send back: evil_tar.py CASE OUT_PATH OUTSIDE_DIR.

Each case is an archive restore must refuse (or, for "setuid" and "ignored", accept with the bits dropped
and the excluded names skipped). OUTSIDE_DIR is a directory outside the workspace that must stay empty.
"""
import gzip
import io
import sys
import tarfile


def add_file(tar, name, data=b"pwned\n", mode=0o644):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def add_dir(tar, name, mode=0o755):
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    tar.addfile(info)


def add_link(tar, name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    tar.addfile(info)


def add_special(tar, name, kind):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.devmajor, info.devminor = 1, 3
    tar.addfile(info)


def build(case, tar, outside):
    add_file(tar, "a.txt", b"changed by the sandbox\n")  # a harmless change that must not land either
    if case == "absolute":
        add_file(tar, outside + "/pwned")
    elif case == "dotdot":
        add_file(tar, "../pwned")
    elif case == "dotdot-inner":
        add_dir(tar, "sub")
        add_file(tar, "sub/../../pwned")
    elif case == "symlink-then-file":
        add_link(tar, "esc", outside)
        add_file(tar, "esc/pwned")
    elif case == "relative-symlink-then-file":
        add_link(tar, "esc", "../../../../../../../../.." + outside)
        add_file(tar, "esc/pwned")
    elif case == "symlink-to-etc":
        add_link(tar, "etc", "/etc")
    elif case == "symlink-up":
        add_dir(tar, "deep")
        add_link(tar, "deep/up", "../..")
    elif case == "symlink-chain":
        add_link(tar, "b", ".")
        add_link(tar, "a", "b/../escaped")
    elif case == "hardlink":
        add_link(tar, "hl", "a.txt", tarfile.LNKTYPE)
    elif case == "hardlink-outside":
        add_link(tar, "hl", outside + "/target", tarfile.LNKTYPE)
    elif case == "fifo":
        add_special(tar, "fifo", tarfile.FIFOTYPE)
    elif case == "chardev":
        add_special(tar, "null", tarfile.CHRTYPE)
    elif case == "blockdev":
        add_special(tar, "disk", tarfile.BLKTYPE)
    elif case == "duplicate":
        add_dir(tar, "dup")
        add_link(tar, "dup", outside)
    elif case == "disk-symlink-parent":
        add_file(tar, "outlink/pwned")
    elif case == "bomb":
        add_file(tar, "bomb", b"\0" * (2 * 1024 * 1024))
    elif case == "setuid":
        add_file(tar, "suid", b"#!/bin/sh\n", 0o4755)
        add_file(tar, "sgid", b"#!/bin/sh\n", 0o2755)
        add_dir(tar, "sticky", 0o1777)
    elif case == "ignored":
        add_file(tar, "node_modules/evil.js")
        add_link(tar, "node_modules/hl", "a.txt", tarfile.LNKTYPE)
        add_file(tar, ".ferry-runtime/x")
        add_file(tar, "._resource")
        add_dir(tar, "./")
    elif case == "deep-10000":  # one file 10,000 directories down (a 20 KB name): no directory entries
        add_file(tar, "/".join(["d"] * 10000) + "/f")
    elif case == "deep-300":  # 300 levels, each directory listed
        for i in range(1, 301):
            add_dir(tar, "/".join(["d"] * i))
        add_file(tar, "/".join(["d"] * 300) + "/f")
    elif case == "long-component":
        add_file(tar, "c" * 300)
    elif case == "long-path":  # 20 components of 250 bytes
        name = ""
        for i in range(20):
            name = name + ("/" if name else "") + chr(97 + i) * 250
            add_dir(tar, name)
        add_file(tar, name + "/f")
    elif case == "orphan":  # an entry whose directory is not in the archive
        add_file(tar, "nodir/f")
    elif case == "leaf-symlink":
        add_file(tar, "victim", b"pwned\n")
    else:
        raise SystemExit("unknown case " + case)


def main():
    case, out, outside = sys.argv[1], sys.argv[2], sys.argv[3]
    if case == "gzip-bomb":
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
            info = tarfile.TarInfo("zeros")
            info.size = 64 * 1024 * 1024
            tar.addfile(info, io.BytesIO(b"\0" * info.size))
        with open(out, "wb") as f:
            f.write(gzip.compress(raw.getvalue()))
        return
    with tarfile.open(out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        build(case, tar, outside)


main()
