#!/usr/bin/env python3
"""Writes the fuzz seeds (a few meaningful inputs per target) into spec/fuzz/<target>/.

The seeds are committed; this script says how they were made: python3 spec/fuzz/seeds.py
Input layouts are described at the top of each target (spec/fuzz/<target>.lua, spec/fuzz/b64.c).
"""
import base64
import io
import json
import os
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def b64_seeds():
    text = b"ferry moves a workspace into a sandbox and back\n" * 3
    put("b64", "plain", b"\x00\x00" + base64.b64encode(b"hello world"))
    put("b64", "wrapped76", b"\x07\x4c" + base64.encodebytes(text))
    put("b64", "padding", b"\x03\x05" + b"QQ==\nQUI=\r\nQUJD\t")
    put("b64", "bad-after-pad", b"\x02\x00" + b"QQ==QQ==")
    put("b64", "bad-char", b"\x01\x01" + b"QUJD*QUJD")
    put("b64", "truncated", b"\x09\x00" + b"QUJDRA")
    put("b64", "binary", b"\x10\x03" + bytes(range(256)))


def tar_bytes(build, fmt=tarfile.GNU_FORMAT):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt) as tar:
        build(tar)
    data = raw.getvalue()
    # tarfile pads to 10 KiB records: keep the two zero blocks that end an archive and drop the rest
    end = len(data.rstrip(b"\0"))
    end = (end + 511) // 512 * 512
    return data[:end] + b"\0" * 1024


def add(tar, name, kind=tarfile.REGTYPE, data=b"", mode=0o644, link=""):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mtime = 1700000000
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def tar_seeds():
    def workspace(tar):
        add(tar, "./", tarfile.DIRTYPE, mode=0o755)
        add(tar, "./src", tarfile.DIRTYPE, mode=0o755)
        add(tar, "./src/main.c", data=b"int main(void) { return 0; }\n")
        add(tar, "./README.md", data=b"# app\n", mode=0o600)
        add(tar, "./link", tarfile.SYMTYPE, link="src/main.c")
        add(tar, "./d/x", data=b"over the disk's d/x\n")

    put("tar_guard", "workspace", tar_bytes(workspace))
    put("tar_guard", "workspace-pax", tar_bytes(workspace, tarfile.PAX_FORMAT))
    put("tar_guard", "long-name", tar_bytes(lambda t: add(t, "./" + "/".join(["deep"] * 40) + "/f", data=b"x")))
    put("tar_guard", "dotdot", tar_bytes(lambda t: add(t, "../escape", data=b"x")))
    put("tar_guard", "absolute", tar_bytes(lambda t: add(t, "/tmp/escape", data=b"x")))

    def symlink_then_file(tar):
        add(tar, "./out", tarfile.SYMTYPE, link="../outside")
        add(tar, "./out/pwned", data=b"x")

    put("tar_guard", "symlink-then-file", tar_bytes(symlink_then_file))

    def chain(tar):
        add(tar, "./b", tarfile.SYMTYPE, link=".")
        add(tar, "./a", tarfile.SYMTYPE, link="b/../x")
        add(tar, "./ln/y", data=b"below the disk symlink")

    put("tar_guard", "symlink-chain", tar_bytes(chain))

    def specials(tar):
        add(tar, "./hl", tarfile.LNKTYPE, link="README.md")
        add(tar, "./fifo", tarfile.FIFOTYPE)
        add(tar, "./dup", data=b"1")
        add(tar, "./dup", data=b"2")

    put("tar_guard", "specials", tar_bytes(specials))

    def ignored(tar):
        add(tar, "./node_modules/x.js", data=b"x")
        add(tar, "./.ferry-runtime/y", data=b"y")
        add(tar, "./._z", data=b"z")
        add(tar, "./esc", tarfile.SYMTYPE, link="../outside")

    put("tar_guard", "ignored", tar_bytes(ignored))


def listing_seeds():
    def rec(kind, mode, size, mtime, path, target="", mark="u", ino=12, dev=2049):
        return f"{mark}\0{kind}\0{mode}\0{size}\0{mtime}\0{ino}\0{dev}\0{path}\0{target}\0"

    body = (rec("d", 755, 4096, "1700000000.5", "./src") + rec("f", 644, 13, "1700000000.0", "./src/m.c", ino=13)
            + rec("l", 777, 5, "1700000000.0", "./link", "a.txt", ino=14)
            + rec("f", 600, 3, "1700000001.0", "./a.txt", mark="c", ino=15))
    put("listing", "plain", "F\0" + body + "E\0")
    digest = "98ea6e4f216f2fb4b69fff9b3a44842c38686ca685f3f55dc48c5d3fb1107be4"
    put("listing", "hashed", "F\0" + body + "H\0" + f"./a.txt\0{digest}  -\0./src/m.c\0\0" + "E\0")
    put("listing", "cut-short", "F\0" + body[:-7])
    put("listing", "odd-names", "F\0" + rec("f", 644, 1, "0", "./with\nnewline") + rec("p", 644, 0, "0", "./fifo")
        + "E\0")
    put("listing", "incremental", "I\0R\0" + rec("d", 755, 4096, "1700000000.5", "./src", mark="c")
        + rec("f", 644, 13, "1700000000.0", "./src/m.c", ino=13) + "H\0E\0")


def status_seeds():
    put("status", "raw-output", b"\x00\x00" + b"some output\n::ferry:: rc=0\n12\n")
    put("status", "busybox-wc", b"\x00\x07" + b"x" * 700 + b"::ferry:: rc=1\n    700\n")
    put("status", "no-status", b"\x00\x03" + b"output without its status line")
    put("status", "mark-in-data", b"\x00\x05" + b"::ferry:: rc=9\n9\nmore\n::ferry:: rc=0\n 4\n")
    put("status", "well-formed", b"\x02\x10" + b"\x00\x00\x0c" + b"hello world\n")
    put("status", "well-formed-b64", b"\x23\x09" + b"\x01\x02\x00" + bytes(range(200)) * 3)
    put("status", "b64-bad", b"\x01\x04" + b"aGVsbG8=\n*bad*\n::ferry:: rc=0\n5\n")
    put("status", "consumer-fails", b"\x06\x02" + b"\x00\x00\x05" + b"data!")


def state_seeds():
    state = {
        "version": 1, "provider": "local", "adapter": "shell", "workspace": "/tmp/seedws/ws",
        "remote_dir": "/tmp/seedws/remote", "runtime_dir": "/tmp/seedws/remote/.ferry-runtime",
        "excludes": ["node_modules/", "vendor/", "dist/", "build/", "out/", "coverage/", ".next/", ".turbo/",
                     ".cache/", "._*", ".ferry-runtime", "*.log"],
        "preserve": [".ferry-runtime"], "assets": {}, "local_stat": {}, "ferry_version": "0.1.0",
        "created_at": 1796084866,
        "remote_stat": {"a.txt": "f 644 3 1796084866.0000000000", "src": "d 755"},
        "baseline": {
            "a.txt": {"kind": "file", "size": 3, "mode": 420,
                      "sha256": "98ea6e4f216f2fb4b69fff9b3a44842c38686ca685f3f55dc48c5d3fb1107be4"},
            "src": {"kind": "dir", "mode": 493},
            "link": {"kind": "symlink", "target": "a.txt"},
        },
    }
    put("state", "prepared", json.dumps(state))
    state["pending_removals"] = ["a.txt"]
    state["local_stat"] = {"a.txt": "420 3 1234 1796084866.0 98ea6e4f216f2fb4b69fff9b3a44842c38686ca685f3f55dc48c5d3fb1107be4"}
    put("state", "pending", json.dumps(state))
    v2 = {k: v for k, v in state.items() if k not in ("baseline", "local_stat", "remote_stat")}
    v2.update({"version": 2, "trees": {"baseline": "ab" * 32, "remote": "cd" * 32}, "sync": {"id": "0123456789abcdef"}})
    put("state", "version-2", json.dumps(v2))
    put("state", "old-version", json.dumps({"version": 0, "provider": "local"}))
    put("state", "not-json", "{\"version\": 1, \"provider\": ")
    put("state", "wrong-types", json.dumps({"version": 1, "provider": "local", "remote_dir": "/r", "workspace": "/w",
                                            "baseline": {"x": {"kind": "file", "mode": 1e300}}, "excludes": "*.log"}))


def excludes_seeds():
    put("excludes", "defaults", "node_modules/\nvendor/\n._*\n.ferry-runtime\n\nnode_modules\nweb/node_modules/x.js\n._a\nsrc/a.c\n")
    put("excludes", "globstar", "**/tmp\ndocs/**/draft.md\n/cache/**\n\ntmp\na/b/tmp\ndocs/draft.md\ndocs/x/y/draft.md\ncache\ncache/x\n")
    put("excludes", "reinclude", "/*\n!/mcp.json\n!/skills\n\nmcp.json\nskills/a/SKILL.md\nextensions/x\n")
    put("excludes", "escapes", "\\*.log\na\\?b\n*.ba?\n\n*.log\nx.log\na?b\nazb\nf.bak\n")
    put("excludes", "bad", "a/../b\n\nx\n")
    put("excludes", "dir-only", "logs/\n!keep/\n\nlogs\nlogs/x\nkeep/\n")


if __name__ == "__main__":
    b64_seeds()
    tar_seeds()
    listing_seeds()
    status_seeds()
    state_seeds()
    excludes_seeds()
