-- Delta re-sync (ferry.prepare after an earlier prepare of the same sandbox): only the difference
-- travels, and the sandbox ends exactly as a full sync would leave it, edits made on either side included.
local core = require "ferry.core"
local ferry = require "ferry"
local helpers = require "support.helpers"
local sandboxes = require "support.sandboxes"
local W = require "support.workspaces"

local q = core.sh_quote

-- Every entry under the remote dir but the runtime dir: rel -> "kind mode -> target" plus the sha256 of
-- each file, read through the sandbox itself (GNU find and sha256sum).
local function remote_tree(sb, root)
  local hash_loop = 'for f do printf "%s\\0" "$f"; sha256sum < "$f" | cut -c1-64; done'
  local res = assert(sb:exec("cd " .. q(root) .. " || exit 1\n"
    .. "find . -mindepth 1 -path ./.ferry-runtime -prune -o -printf '%y %m -> %l\\0%p\\0' || exit 1\n"
    .. "printf '#\\0'\n"
    .. "find . -mindepth 1 -path ./.ferry-runtime -prune -o -type f -exec sh -c " .. q(hash_loop) .. " sh {} +"))
  assert.equal(0, res.code, res.stderr)
  local tree, out, hashing = {}, res.stdout, false
  local pos = 1
  while pos <= #out do
    local z = assert(out:find("\0", pos, true))
    local field = out:sub(pos, z - 1)
    pos = z + 1
    if field == "#" and not hashing then
      hashing = true
    elseif hashing then
      local rel = field:sub(3)
      local nl = assert(out:find("\n", pos, true))
      tree[rel] = tree[rel] .. " " .. out:sub(pos, nl - 1)
      pos = nl + 1
    else
      local z2 = assert(out:find("\0", pos, true))
      tree[out:sub(pos + 2, z2 - 1)] = field
      pos = z2 + 1
    end
  end
  return tree
end

-- Wait until a file written in the sandbox dir `root` gets an mtime past the sync marker's, so that the
-- edits a spec makes next count as "modified after the marker" and get hashed. (An edit within the
-- marker's clock tick has no hash and is resent: right, but not the count those specs check.)
local function past_marker(root)
  local marker = assert(core.fs_stat(root .. "/.ferry-runtime/sync.mark"))
  local probe = root .. "/.ferry-runtime/clock-probe"
  repeat
    helpers.write_file(probe, "")
    local written = assert(core.fs_stat(probe))
  until written.mtime > marker.mtime or not os.execute("sleep 0.002")
  assert(os.remove(probe))
end

local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

local ADAPTER = { name = "test", excludes = {}, preserve = { ".keepme" }, hooks = {} }

-- A workspace of about 2 MB with awkward names: 32 random 64 KiB files that never change, and small files
-- the specs edit on either side.
local function fill(ws)
  for i = 1, 32 do W.write(ws, "big/blob " .. i, helpers.random_bytes(64 * 1024)) end
  W.write(ws, "keep me.txt", "kept\n")
  W.write(ws, "line\nbreak.txt", "before\n")
  W.write(ws, "doomed.txt", "to be deleted locally\n")
  W.write(ws, "chmod me.sh", "#!/bin/sh\n")
  W.write(ws, "become dir", "a file that becomes a dir\n")
  W.write(ws, "sub dir/remote edit.txt", "the sandbox edits this\n")
  W.write(ws, "sub dir/remote delete.txt", "the sandbox deletes this\n")
  W.write(ws, "sub dir/touched.txt", "the sandbox touches this\n")
  W.write(ws, "linkdir/inside", "the sandbox replaces my dir by a symlink\n")
  W.symlink(ws, "link", "keep me.txt")
  W.write(ws, "node_modules/pkg/index.js", "excluded\n")
end

for _, label in ipairs { "local", "bwrap" } do
  describe("delta re-sync on " .. label, function()
    local box, sb, ws, tmp, state

    before_each(function()
      box = sandboxes.make(label)
      sb = box:open()
      tmp = helpers.tmpdir()
      ws = tmp .. "/ws"
      W.mkdir(tmp, "ws")
      state = tmp .. "/state.json"
    end)
    after_each(function()
      sb:close()
      box:cleanup()
      helpers.rmtree(tmp)
    end)

    local function prepare(extra)
      local opts = { provider = box.provider, workspace = ws, remote_dir = box.root, state = state,
        adapter = ADAPTER }
      for k, v in pairs(extra or {}) do opts[k] = v end
      return assert(ferry.prepare(opts))
    end

    it("sends only the difference and leaves the sandbox as a full sync would", function()
      fill(ws)
      local cold = prepare()
      assert.is_false(cold.delta)
      local r = box.host_root
      W.write(r, ".keepme/state", "preserved\n")

      -- local edits: change, add, delete, chmod, a file becomes a dir, a symlink is re-pointed
      W.write(ws, "line\nbreak.txt", "after, and longer\n")
      W.write(ws, "added file.txt", "new\n")
      assert(os.remove(ws .. "/doomed.txt"))
      assert(core.fs_safe_chmod(ws, "chmod me.sh", 493))
      assert(os.remove(ws .. "/become dir"))
      W.write(ws, "become dir/inner", "inside\n")
      assert(os.remove(ws .. "/link"))
      W.symlink(ws, "link", "line\nbreak.txt")
      -- sandbox edits: modify, add strays (excluded ones too), delete, touch, replace a dir by a symlink
      W.write(r, "sub dir/remote edit.txt", "edited in the sandbox\n")
      W.write(r, "stray file", "added in the sandbox\n")
      W.write(r, "node_modules/junk.js", "installed in the sandbox\n")
      W.write(r, "sub dir/.cache/x", "cache\n")
      assert(os.remove(r .. "/sub dir/remote delete.txt"))
      assert(os.execute("touch -d '+1 hour' " .. q(r .. "/sub dir/touched.txt")))
      assert(os.execute("rm -rf " .. q(r .. "/linkdir") .. " && ln -s big " .. q(r .. "/linkdir")))

      local warm = prepare()
      assert.is_true(warm.delta, warm.delta_fallback)
      -- sent: 6 local changes (the new dir and its file count 2), the sandbox's edit and deletion, linkdir
      -- and its file; deleted: doomed.txt, the strays, the old file, symlink and symlinked dir
      assert.equal(10, warm.delta_files)
      assert.equal(7, warm.delta_deleted)
      assert.equal(cold.commands + 1, warm.commands)
      assert.is_true(warm.bytes_sent * 20 < cold.bytes_sent,
        string.format("warm sent %d bytes, cold %d", warm.bytes_sent, cold.bytes_sent))
      print(string.format("\n%s: bytes_sent cold %d, warm %d (%d entries sent, %d deleted)", label,
        cold.bytes_sent, warm.bytes_sent, warm.delta_files, warm.delta_deleted))
      local after_delta = remote_tree(sb, box.root)
      assert.equal("l 777 -> line\nbreak.txt", after_delta["link"])
      assert.equal("preserved\n", W.read(r, ".keepme/state"))

      local full = prepare { delta = false }
      assert.is_false(full.delta)
      assert.same(remote_tree(sb, box.root), after_delta)
      assert.is_nil(after_delta["node_modules"])
      assert.is_nil(after_delta["stray file"])
      assert.equal(full.files + full.dirs + full.symlinks + 2, count(after_delta)) -- + .keepme, .keepme/state
    end)

    it("resends only what it cannot vouch for after a restore brought the sandbox's edits home", function()
      fill(ws)
      prepare()
      past_marker(box.host_root)
      W.write(box.host_root, "sub dir/remote edit.txt", "edited in the sandbox\n")
      W.write(box.host_root, "made in the sandbox", "new\n")
      local got = assert(ferry.restore { state = state })
      assert.same({ "made in the sandbox", "sub dir/remote edit.txt" }, got.changed)
      -- the edited file is judged by its hash; the new one's mode was never set by ferry, so it is resent
      local warm = prepare()
      assert.is_true(warm.delta, warm.delta_fallback)
      assert.equal(1, warm.delta_files)
      assert.equal(0, warm.delta_deleted)
      local again = prepare()
      assert.is_true(again.delta, again.delta_fallback)
      assert.equal(0, again.delta_files)
      assert.equal(0, again.bytes_sent)
    end)

    it("falls back to the full sync when the excludes change, when asked, or when the remote dir is gone",
      function()
        fill(ws)
        prepare()
        local other = prepare { excludes = { "*.sh" } }
        assert.is_false(other.delta)
        assert.equal("the excludes changed", other.delta_fallback)
        assert.is_nil(W.read(box.host_root, "chmod me.sh"))
        assert.is_false(prepare { excludes = { "*.sh" }, delta = false }.delta)
        assert(os.execute("rm -rf " .. q(box.host_root)))
        local again = prepare { excludes = { "*.sh" } }
        if label == "local" then -- opening bwrap:DIR makes its workspace dir again: the delta sends all
          assert.is_false(again.delta)
          assert.matches("is missing", again.delta_fallback)
        end
        assert.equal("kept\n", W.read(box.host_root, "keep me.txt"))
        assert.equal(W.read(ws, "big/blob 7"), W.read(box.host_root, "big/blob 7"))
        assert.is_true(prepare { excludes = { "*.sh" } }.delta)
      end)

    it("redoes a full sync when the sandbox changed between the listing and the delta", function()
      fill(ws)
      prepare()
      W.write(ws, "keep me.txt", "changed locally\n")
      local listed = false
      local res = prepare { on_exec = function(_, script)
        if listed and script:find("tar -x", 1, true) and not W.read(box.host_root, "late stray") then
          W.write(box.host_root, "late stray", "written while ferry worked\n")
        end
        listed = listed or script:find("ferry-delta", 1, true) ~= nil
      end }
      assert.is_false(res.delta)
      assert.equal("after the delta, late stray differed in the sandbox", res.delta_fallback)
      assert.is_nil(W.read(box.host_root, "late stray"))
      assert.equal("changed locally\n", W.read(box.host_root, "keep me.txt"))
    end)

    it("falls back when the state is of another provider or unreadable", function()
      W.write(ws, "a", "a\n")
      prepare()
      local st = assert(require("ferry.state").read(state))
      st.provider = "cmd:env"
      assert(require("ferry.state").write(state, st))
      local res = prepare()
      assert.is_false(res.delta)
      assert.equal("the state is of provider cmd:env", res.delta_fallback)
      helpers.write_file(state, "{ not json")
      res = prepare()
      assert.is_false(res.delta)
      assert.matches("is not a ferry state file", res.delta_fallback)
      assert.is_true(prepare().delta)
    end)
  end)
end

describe("delta re-sync on the local side", function()
  local box, tmp, ws, opts

  before_each(function()
    box = sandboxes.make("local")
    tmp = helpers.tmpdir()
    ws = tmp .. "/ws"
    opts = { provider = box.provider, workspace = ws, remote_dir = box.root, state = tmp .. "/state.json",
      adapter = ADAPTER }
  end)
  after_each(function()
    box:cleanup()
    helpers.rmtree(tmp)
  end)

  local function set_mtime(rel, seconds)
    assert(os.execute("touch -d @" .. seconds .. " " .. q(ws .. "/" .. rel)))
  end

  -- Write in place (same inode), as an editor that truncates would.
  local function overwrite(rel, data)
    local f = assert(io.open(ws .. "/" .. rel, "wb"))
    assert(f:write(data))
    assert(f:close())
  end

  local function prepare_counting()
    return assert(ferry.prepare(opts))
  end

  it("reads only the files whose mode, size, inode or mtime moved, before and after a restore", function()
    fill(ws)
    local old = os.time() - 100
    assert(os.execute("find " .. q(ws) .. " -type f -exec touch -d @" .. old .. " {} +"))
    local cold = prepare_counting()
    assert.is_false(cold.delta)
    assert.equal(0, cold.hashed_files)

    local warm = prepare_counting()
    assert.is_true(warm.delta, warm.delta_fallback)
    assert.equal(0, warm.hashed_files)
    assert.equal(0, warm.delta_files)
    assert.equal(1, warm.commands) -- the listing found nothing to do
    print(string.format("\nhashed files: %d in the workspace, cold %d (hashed while sent), warm %d",
      cold.files, cold.hashed_files, warm.hashed_files))

    -- same size, a new mtime out of the racy window; and a file renamed over another with the old mtime
    overwrite("keep me.txt", "KEPT\n")
    set_mtime("keep me.txt", old + 50)
    W.write(ws, "line\nbreak.txt", "BEFORE\n")
    set_mtime("line\nbreak.txt", old)
    assert(core.fs_safe_chmod(ws, "chmod me.sh", 448))
    local changed = prepare_counting()
    assert.is_true(changed.delta, changed.delta_fallback)
    assert.equal(3, changed.hashed_files)
    assert.equal(3, changed.delta_files)
    assert.equal("KEPT\n", W.read(box.root, "keep me.txt"))
    assert.equal("BEFORE\n", W.read(box.root, "line\nbreak.txt"))
    assert.equal(448, core.fs_lstat(box.root .. "/chmod me.sh").mode)

    -- a restore lands the sandbox's edit by rename: only that file is read again
    W.write(box.root, "sub dir/remote edit.txt", "edited in the sandbox\n")
    local got = assert(ferry.restore { state = opts.state })
    assert.same({ "sub dir/remote edit.txt" }, got.changed)
    assert.equal(0, got.hashed_files)
    local after = prepare_counting()
    assert.is_true(after.delta, after.delta_fallback)
    assert.equal(1, after.hashed_files)
    assert.equal(0, after.delta_files)
  end)

  it("restore reads only the local files whose lstat moved since the prepare, and merges by their hashes",
    function()
      W.write(ws, "steady", "steady\n")
      W.write(ws, "edited", "before\n")
      W.write(ws, "sub/remote", "remote before\n")
      local old = os.time() - 100
      assert(os.execute("find " .. q(ws) .. " -type f -exec touch -d @" .. old .. " {} +"))
      prepare_counting()
      overwrite("edited", "AFTER\n")
      set_mtime("edited", old + 50)
      W.write(box.root, "sub/remote", "remote after\n")
      local got = assert(ferry.restore { state = opts.state })
      assert.equal(1, got.hashed_files)
      assert.same({ "sub/remote" }, got.changed)
      assert.same({ "edited" }, got.kept)
      assert.equal("AFTER\n", W.read(ws, "edited"))
      assert.equal("remote after\n", W.read(ws, "sub/remote"))
    end)

  it("hashes again a file written within 2 s of the earlier walk, even with its mtime and inode kept",
    function()
      W.write(ws, "steady", "steady\n")
      set_mtime("steady", os.time() - 100)
      W.write(ws, "racy", "first\n")
      local now = os.time()
      set_mtime("racy", now)
      prepare_counting()
      local before = assert(core.fs_lstat(ws .. "/racy"))
      overwrite("racy", "again\n")
      set_mtime("racy", now)
      local st = assert(core.fs_lstat(ws .. "/racy"))
      assert.same({ before.mtime, before.size, before.ino }, { st.mtime, st.size, st.ino })
      local warm = prepare_counting()
      assert.is_true(warm.delta, warm.delta_fallback)
      assert.equal(1, warm.hashed_files)
      assert.equal(1, warm.delta_files)
      assert.equal("again\n", W.read(box.root, "racy"))
    end)

  it("reads a version 1 state (an older ferry's): restore converts it, prepare starts over with a full sync",
    function()
      W.write(ws, "a", "a\n")
      W.write(ws, "b/c", "c\n")
      W.symlink(ws, "l", "a")
      prepare_counting()
      local state_file = require "ferry.state"
      local st = assert(state_file.read(opts.state))
      local baseline = assert(state_file.tree(opts.state, st, "baseline"))
      local v1 = { version = 1, provider = st.provider, remote_dir = st.remote_dir, runtime_dir = st.runtime_dir,
        adapter = st.adapter, workspace = st.workspace, excludes = st.excludes, preserve = st.preserve,
        assets = {}, baseline = {}, remote_stat = {}, local_stat = {} }
      for rel, kind, mode, size, sha256, target in baseline:iter(nil, "kind mode size sha256 target") do
        v1.baseline[rel] = { kind = kind, mode = kind ~= "symlink" and mode & 511 or nil,
          size = kind == "file" and size or nil, sha256 = sha256, target = target }
      end
      W.write(tmp, "state.json", require("cjson").encode(v1))
      W.write(box.root, "b/c", "C from the sandbox\n")
      local got = assert(ferry.restore { state = opts.state })
      assert.same({ "b/c" }, got.changed)
      assert.equal(2, got.hashed_files) -- no lstat recorded: every file read
      assert.equal("C from the sandbox\n", W.read(ws, "b/c"))
      local now = assert(state_file.read(opts.state))
      assert.equal(2, now.version)
      assert.is_nil(now.baseline)
      assert.is_nil(now.trees.remote)
      local warm = prepare_counting()
      assert.is_false(warm.delta)
      assert.equal("the earlier sync did not list the sandbox (no GNU find)", warm.delta_fallback)
      local again = prepare_counting()
      assert.is_true(again.delta, again.delta_fallback)
      assert.equal(0, again.delta_files)
      -- a version 1 state is no base for a delta
      W.write(tmp, "state.json", require("cjson").encode(v1))
      local full = prepare_counting()
      assert.is_false(full.delta)
      assert.equal("the state was written by an older ferry", full.delta_fallback)
    end)
end)

describe("delta re-sync over every transfer mode", function()
  it("lists, deletes and sends through raw, base64 and chunked channels", function()
    local box, tmp = sandboxes.make("local"), helpers.tmpdir()
    local ws, big = tmp .. "/ws", helpers.random_bytes(1024 * 1024)
    for _, caps in ipairs { {}, { binary = false }, { stdin = false } } do
      local sb = ferry.open("local", { caps = caps })
      local opts = { provider = sb, workspace = ws, remote_dir = box.root, state = tmp .. "/state.json" }
      W.write(ws, "bin\nname", W.ALL_BYTES)
      W.write(ws, "same", big)
      assert(ferry.prepare(opts))
      W.write(ws, "bin\nname", W.ALL_BYTES:reverse())
      W.write(box.root, "stray", "x\n")
      local warm = assert(ferry.prepare(opts))
      assert.is_true(warm.delta, warm.delta_fallback)
      assert.equal(1, warm.delta_files)
      assert.equal(1, warm.delta_deleted)
      assert.is_true(warm.bytes_sent <= 10240, "sent " .. warm.bytes_sent)
      assert.equal(W.ALL_BYTES:reverse(), W.read(box.root, "bin\nname"))
      assert.is_nil(W.read(box.root, "stray"))
      assert.equal(big, W.read(box.root, "same"))
      sb:close()
    end
    box:cleanup()
    helpers.rmtree(tmp)
  end)
end)

describe("delta re-sync with a long delete list", function()
  it("does a full sync instead of a script over the argument limit", function()
    local box, tmp = sandboxes.make("local"), helpers.tmpdir()
    local opts = { provider = "local", workspace = tmp .. "/ws", remote_dir = box.root, state = tmp .. "/s.json" }
    W.write(tmp, "ws/a", "a\n")
    assert(ferry.prepare(opts))
    local long = ("x"):rep(100)
    assert(os.execute("cd " .. q(box.root) .. " && for i in $(seq 1000); do : > \"stray $i " .. long .. "\"; done"))
    local res = assert(ferry.prepare(opts))
    assert.is_false(res.delta)
    assert.equal("1000 paths to delete (the script would be too long)", res.delta_fallback)
    local left = assert(core.fs_readdir(box.root))
    table.sort(left)
    assert.same({ ".ferry-runtime", "a" }, left)
    box:cleanup()
    helpers.rmtree(tmp)
  end)
end)

describe("delta re-sync without GNU find", function()
  it("does a full sync each time, and says why", function()
    local box = sandboxes.make("busybox")
    local tmp = helpers.tmpdir()
    W.write(tmp, "ws/a", "a\n")
    local opts = { provider = box.provider, workspace = tmp .. "/ws", remote_dir = box.root,
      state = tmp .. "/state.json" }
    assert.is_false(assert(ferry.prepare(opts)).delta)
    W.write(box.host_root, "stray", "x\n")
    local res = assert(ferry.prepare(opts))
    assert.is_false(res.delta)
    assert.equal("the earlier sync did not list the sandbox (no GNU find)", res.delta_fallback)
    assert.is_nil(W.read(box.host_root, "stray"))
    assert.equal("a\n", W.read(box.host_root, "a"))
    box:cleanup()
    helpers.rmtree(tmp)
  end)
end)
