-- Trees and tar streams: core.tar_scan_tree reads an archive into a tree (what core.tar_scan and the first
-- checks of ferry.guard see, without a table per entry), and core.tar_writer streams a tree's entries,
-- hashing what it sends into the tree.
local ferry = require "ferry"
local core = require "ferry.core"
local excludes = require "ferry.excludes"
local guard = require "ferry.guard"
local remote = require "ferry.remote"
local helpers = require "support.helpers"
local trees = require "support.trees"
local W = require "support.workspaces"

local EVIL_TAR = helpers.root .. "/spec/support/evil_tar.py"
local q = core.sh_quote

local function write_archive(path, root, names, opts)
  local w = assert(core.tar_writer(root, names, opts))
  local f = assert(io.open(path, "wb"))
  for chunk in w.read, w do f:write(chunk) end
  f:close()
  return w
end

local paths = trees.paths

-- Python's tarfile writes the members described by `lines` (Python statements using add_* of evil_tar.py).
local function python_tar(path, body)
  local script = "import sys\nsys.argv = ['x', 'none', '/dev/null', '/nonexistent']\n"
    .. "exec(open(" .. string.format("%q", EVIL_TAR) .. ").read().split('\\ndef main')[0])\n"
    .. "import tarfile\n"
    .. "with tarfile.open(" .. string.format("%q", path) .. ", 'w', format=tarfile.GNU_FORMAT) as tar:\n"
    .. body
  local f = assert(io.open(path .. ".py", "w"))
  f:write(script)
  f:close()
  helpers.sh("python3 " .. q(path .. ".py"))
end

describe("core.tar_scan_tree", function()
  local tmp
  before_each(function()
    tmp = helpers.tmpdir()
  end)
  after_each(function()
    helpers.rmtree(tmp)
  end)

  it("reads ferry's own stream as core.tar_scan does: kinds, modes, sizes, digests, targets", function()
    W.fill(tmp .. "/ws")
    local t0 = assert(core.tree_walk(tmp .. "/ws", {}))
    write_archive(tmp .. "/a.tar", tmp .. "/ws", t0)
    local t, info = assert(core.tar_scan_tree(tmp .. "/a.tar"))
    local entries = assert(core.tar_scan(tmp .. "/a.tar"))
    assert.equal(#entries, info.entries)
    assert.equal(#entries, t:count())
    assert.same({}, info.refused)
    for _, e in ipairs(entries) do
      local rel = assert(guard.normalise(e.name))
      local got = t:get(rel)
      assert.equal(e.kind, got.kind, e.name)
      assert.equal(e.mode, got.mode, e.name)
      assert.equal(e.kind == "file" and e.size or 0, got.size, e.name)
      assert.equal(e.sha256, got.sha256, e.name)
      assert.equal(e.linkname, got.target, e.name)
      assert.equal(e.name ~= rel and e.name or nil, got.name) -- a dir's member name ends in '/'
    end
    assert.same(paths(t0), paths(t))
  end)

  it("reads a sandbox's GNU tar stream: './' names and trailing slashes kept as member names", function()
    local root = tmp .. "/remote"
    W.fill(root)
    local sb = assert(ferry.open("local"))
    local res = assert(sb:exec(remote.restore_script(root, { ".ferry-runtime" }, {})))
    sb:close()
    assert.equal(0, res.code, res.stderr)
    helpers.write_file(tmp .. "/r.tar", res.stdout)
    local t, info = assert(core.tar_scan_tree(tmp .. "/r.tar"))
    local entries = assert(core.tar_scan(tmp .. "/r.tar"))
    local names = {}
    for rel, name in t:iter(nil, "name") do names[name] = rel end
    for _, e in ipairs(entries) do
      local rel = assert(guard.normalise(e.name))
      assert.equal(rel, names[e.name], e.name)
      assert.equal(e.sha256, t:get(rel).sha256)
    end
    assert.equal(#entries, info.entries)
    assert.equal("./dir with space/", t:get("dir with space").name)
  end)

  it("adds the directories an archive implies, marked implied", function()
    python_tar(tmp .. "/i.tar", "  add_file(tar, 'a/b/c.txt')\n  add_dir(tar, 'x', 0o700)\n  add_file(tar, 'x/y/z')\n")
    local t = assert(core.tar_scan_tree(tmp .. "/i.tar"))
    assert.same({ "a", "a/b", "a/b/c.txt", "x", "x/y", "x/y/z" }, paths(t))
    assert.same({ 493, true }, { t:get("a/b").mode, t:get("a/b").implied })
    assert.same({ 448, nil }, { t:get("x").mode, t:get("x").implied })
    assert.same({ 1, 2, 3, 0 }, { t:get("a/b/c.txt").ino, t:get("x").ino, t:get("x/y/z").ino, t:get("a").ino })
    -- the guard refuses such an archive (a parent must be in it), from `implied`
    local _, info = assert(core.tar_scan_tree(tmp .. "/i.tar"))
    local checked = guard.check(t, info, { workspace = tmp })
    assert.same({ { name = "a/b/c.txt", reason = "parent a is not in the archive" },
      { name = "x/y/z", reason = "parent x/y is not in the archive" } }, checked.refused)
  end)

  -- evil_tar.py's cases: the scan (with ferry.guard's options) and ferry.guard.check refuse each, in the
  -- guard's words; what is excluded or only has odd mode bits passes
  local PASS = { ignored = true, setuid = true }
  for _, case in ipairs { "absolute", "dotdot", "dotdot-inner", "hardlink", "hardlink-outside", "fifo", "chardev",
    "blockdev", "duplicate", "symlink-then-file", "ignored", "setuid", "symlink-to-etc", "symlink-chain" } do
    it("refuses as ferry.guard does: " .. case, function()
      helpers.sh("python3 " .. q(EVIL_TAR) .. " " .. case .. " " .. q(tmp .. "/e.tar") .. " " .. q(tmp .. "/outside"))
      W.mkdir(tmp, "ws")
      local matcher = guard.ignore_matcher(excludes.DEFAULT, { ".ferry-runtime" })
      local t, info = assert(core.tar_scan_tree(tmp .. "/e.tar", guard.scan_options(tmp .. "/ws", matcher)))
      local checked = guard.check(t, info, { workspace = tmp .. "/ws" })
      if PASS[case] then
        assert.same({}, checked.refused)
      else
        assert.is_true(#checked.refused > 0)
        for _, r in ipairs(checked.refused) do assert.is_string(r.name) assert.is_string(r.reason) end
      end
      if case == "setuid" then assert.equal(helpers.oct("2755"), t:get("sgid").mode) end -- the caller masks
    end)
  end

  it("refuses as ferry.guard words them the paths too long or too deep to write again, excluded or not", function()
    python_tar(tmp .. "/l.tar", "  add_file(tar, 'ok.txt')\n  add_file(tar, 'c' * 300)\n"
      .. "  add_dir(tar, '/'.join(['d'] * 257))\n  add_file(tar, 'p' * 200 + '/q')\n"
      .. "  add_file(tar, 'node_modules/' + 'x' * 240)\n  add_file(tar, 'node_modules/' + 'y' * 180)\n")
    local ignore = guard.ignore_matcher(excludes.DEFAULT, {})
    local _, info = assert(core.tar_scan_tree(tmp .. "/l.tar", { exclude = ignore, max_path = 200 }))
    local want = {
      { name = ("c"):rep(300), reason = "path longer than 200 bytes", at = 2 },
      { name = ("d/"):rep(257), reason = "path longer than 200 bytes", at = 3 }, -- a dir's name ends with '/'
      { name = ("p"):rep(200) .. "/q", reason = "path longer than 200 bytes", at = 4 },
      { name = "node_modules/" .. ("x"):rep(240), reason = "path longer than 200 bytes", at = 5 },
    }
    assert.same(want, info.refused) -- an excluded name only when it is over the limit by 16 bytes
    local _, wide = assert(core.tar_scan_tree(tmp .. "/l.tar", { exclude = ignore, max_path = 4000 }))
    assert.same({ { name = ("c"):rep(300), reason = "path component longer than 255 bytes", at = 2 },
      { name = want[2].name, reason = "path deeper than 256 components", at = 3 } }, wide.refused)
  end)

  it("reports ferry's own members and leaves them out of the tree, whatever the excludes", function()
    python_tar(tmp .. "/m.tar", "  add_file(tar, './.ferry-runtime/git/out.fields', b'fields')\n"
      .. "  add_file(tar, './a.txt')\n  add_dir(tar, './.ferry-runtime/other')\n")
    local ignore = guard.ignore_matcher(excludes.DEFAULT, { ".ferry-runtime" })
    local t, info = assert(core.tar_scan_tree(tmp .. "/m.tar", { exclude = ignore,
      members = { ".ferry-runtime/git/out.fields", ".ferry-runtime/git/out.bundle" } }))
    assert.same({ [".ferry-runtime/git/out.fields"] = { name = "./.ferry-runtime/git/out.fields", kind = "file",
      size = 6 } }, info.members)
    assert.same({ "a.txt" }, paths(t))
    assert.equal(1, info.ignored) -- the other entry of the runtime dir
    assert.has_error(function() core.tar_scan_tree(tmp .. "/m.tar", { members = "x" }) end,
      "tar_scan_tree: opts.members must be a list of paths")
  end)

  it("refuses what no tree can hold: a symlink below a file, a member named with over 255 './'", function()
    python_tar(tmp .. "/p.tar", "  add_file(tar, 'f')\n  add_file(tar, 'f/g')\n  add_link(tar, 'l', 'x')\n"
      .. "  add_dir(tar, 'l/d')\n  add_file(tar, 'l/d/e')\n  add_file(tar, './' * 256 + 'deep')\n"
      .. "  add_file(tar, 'ok')\n")
    local t, info = assert(core.tar_scan_tree(tmp .. "/p.tar"))
    assert.same({ -- at: the member's place in the archive
      { name = "f/g", reason = "parent f is not a directory in the archive", at = 2 },
      { name = "l/d/", reason = "parent l is a symlink in the archive", at = 4 },
      { name = "l/d/e", reason = "parent l is a symlink in the archive", at = 5 },
      { name = ("./"):rep(256) .. "deep", reason = "malformed path (over 255 './' prefixes or trailing '/')", at = 6 },
    }, info.refused)
    assert.same({ "f", "l", "ok" }, paths(t))
  end)

  it("keeps to its limits, as core.tar_scan does", function()
    python_tar(tmp .. "/b.tar", "  add_file(tar, 'a', b'x' * 1000)\n  add_file(tar, 'b', b'y' * 1000)\n")
    assert.same({ nil, "archive exceeds the 1500 byte limit at b", "EFBIG" },
      { core.tar_scan_tree(tmp .. "/b.tar", { max_bytes = 1500 }) })
    assert.same({ nil, "archive exceeds the 1 entry limit at b", "EFBIG" },
      { core.tar_scan_tree(tmp .. "/b.tar", { max_entries = 1 }) })
    -- an ignored file's content counts too
    assert.same({ nil, "archive exceeds the 1500 byte limit at b", "EFBIG" },
      { core.tar_scan_tree(tmp .. "/b.tar", { max_bytes = 1500, exclude = function() return true end }) })
    local _, info = assert(core.tar_scan_tree(tmp .. "/b.tar"))
    assert.same({ 2, 2000, 0 }, { info.entries, info.bytes, info.ignored })
  end)

  it("reads an empty archive; refuses a damaged one and a missing file", function()
    helpers.write_file(tmp .. "/empty.tar", ("\0"):rep(1024))
    assert.equal(0, assert(core.tar_scan_tree(tmp .. "/empty.tar")):count())
    helpers.write_file(tmp .. "/junk.tar", ("junk"):rep(300))
    local t, err, code = core.tar_scan_tree(tmp .. "/junk.tar")
    assert.is_nil(t)
    assert.matches("^bad archive: ", err)
    assert.equal("EINVAL", code)
    assert.same({ nil, "tar_scan_tree " .. tmp .. "/none: No such file or directory", "ENOENT" },
      { core.tar_scan_tree(tmp .. "/none") })
    python_tar(tmp .. "/cut.tar", "  add_file(tar, 'a', b'x' * 5000)\n")
    local whole = helpers.read_file(tmp .. "/cut.tar")
    helpers.write_file(tmp .. "/cut.tar", whole:sub(1, 2048))
    t, err = core.tar_scan_tree(tmp .. "/cut.tar")
    assert.is_nil(t)
    assert.matches("^bad archive: ", err)
  end)

  it("passes an exclude function's error on, holding nothing open", function()
    python_tar(tmp .. "/x.tar", "  add_file(tar, 'a')\n")
    local fds = helpers.fd_count()
    assert.has_error(function() core.tar_scan_tree(tmp .. "/x.tar", { exclude = function() error("no", 0) end }) end,
      "no")
    assert.equal(fds, helpers.fd_count())
    assert.has_error(function() core.tar_scan_tree(tmp .. "/x.tar", { exclude = 1 }) end,
      "tar_scan_tree: opts.exclude must be a function or an exclude matcher, got number")
    assert.has_error(function() core.tar_scan_tree(tmp .. "/x.tar", { max_bytes = -1 }) end,
      "tar_scan_tree: opts.max_bytes must be a non-negative integer")
  end)
end)

describe("core.tar_writer from a tree", function()
  local tmp, ws
  before_each(function()
    tmp = helpers.tmpdir()
    ws = tmp .. "/ws"
    W.fill(ws)
    W.write(ws, "empty file", "")
  end)
  after_each(function()
    helpers.rmtree(tmp)
  end)

  it("streams what a list of the same names streams, the digests going into the tree", function()
    local t = assert(core.tree_walk(ws, {}))
    local names = paths(t)
    local w1 = write_archive(tmp .. "/list.tar", ws, names, { hash = true })
    local w2 = write_archive(tmp .. "/tree.tar", ws, t, { hash = true })
    assert.equal(helpers.read_file(tmp .. "/list.tar"), helpers.read_file(tmp .. "/tree.tar"))
    assert.equal(w1:bytes(), w2:bytes())
    local digests = w1:digests()
    local n = 0
    for rel, kind, sha in t:iter(nil, "kind sha256") do
      if kind == "file" then
        n = n + 1
        assert.equal(digests[rel], sha, rel)
      end
    end
    assert.equal(W.count(digests), n)
    assert.has_error(function() w2:digests() end,
      "tar_writer: digests: the writer streams a tree; its digests are in the tree")
  end)

  it("records the size and digest of what it sent, when a file changed after the walk", function()
    local t = assert(core.tree_walk(ws, {}))
    assert.equal(#"top 1 plain.txt\n", t:get("plain.txt").size)
    W.write(ws, "plain.txt", "rewritten after the walk, longer\n")
    write_archive(tmp .. "/c.tar", ws, t, { hash = true })
    assert.same({ #"rewritten after the walk, longer\n", core.sha256("rewritten after the walk, longer\n") },
      { t:get("plain.txt").size, t:get("plain.txt").sha256 })
    assert.equal(core.sha256(""), t:get("empty file").sha256)
    assert.equal(0, t:get("empty file").size)
  end)

  it("streams only the flagged entries with opts.flagged", function()
    local t = assert(core.tree_walk(ws, {}))
    t:set_flags("dir with space", 1)
    t:set_flags("dir with space/plain.txt", 3)
    t:set_flags("binary.bin", 2)
    t:set_flags("run.sh", 4)
    write_archive(tmp .. "/f.tar", ws, t, { flagged = 3 })
    local got = {}
    for i, e in ipairs(assert(core.tar_scan(tmp .. "/f.tar"))) do got[i] = e.name end
    assert.same({ "binary.bin", "dir with space/", "dir with space/plain.txt" }, got)
    t:remove("binary.bin")
    write_archive(tmp .. "/g.tar", ws, t, { flagged = 2 })
    assert.same({ "dir with space/plain.txt" }, (function()
      local out = {}
      for i, e in ipairs(assert(core.tar_scan(tmp .. "/g.tar"))) do out[i] = e.name end
      return out
    end)())
  end)

  it("empties the digest of a file that vanished before it was sent", function()
    local t = assert(core.tree_walk(ws, { hash = true }))
    assert.is_string(t:get("plain.txt").sha256)
    os.remove(ws .. "/plain.txt")
    local w = write_archive(tmp .. "/v.tar", ws, t, { hash = true })
    assert.is_nil(t:get("plain.txt").sha256)
    assert.same({ "plain.txt: vanished before it was archived" }, w:warnings())
    assert.equal(core.sha256_file(ws .. "/run.sh"), t:get("run.sh").sha256)
  end)

  it("raises when the tree changes order while it streams", function()
    W.write(ws, "big.bin", ("x"):rep(1 << 20))
    local t = assert(core.tree_walk(ws, {}))
    local w = assert(core.tar_writer(ws, t, {}))
    assert.is_string(w:read())
    t:add("0", { kind = "file" })
    t:count()
    assert.has_error(function() while w:read() do end end, "tar_writer: the tree changed order while it was streamed")
    assert.has_error(function() w:read() end, "tar_writer: read after a failure")
    w:close()
    collectgarbage() -- the writer's locale is gone: the thread's own must be back in place
    assert.equal(1, ("x\233"):find("%a"))
  end)

  it("refuses opts.flagged without a tree, or out of range", function()
    assert.has_error(function() core.tar_writer(ws, { "plain.txt" }, { flagged = 1 }) end,
      "tar_writer: opts.flagged needs a tree of names")
    assert.has_error(function() core.tar_writer(ws, core.tree_new(), { flagged = 256 }) end,
      "tar_writer: opts.flagged must be an integer in 0..255")
  end)
end)
