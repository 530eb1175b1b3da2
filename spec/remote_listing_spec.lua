-- The sandbox's listing (ferry.remote's scripts, read by core.tree_parse_listing) and what a delta builds from
-- it (ferry.delta.current): after a sync leaves the marker, the next listing prints only what changed since
-- (each changed entry, every entry of each changed directory), and the tree recorded at the marker overlaid
-- with it must be the tree a full listing shows, whatever the sandbox did: edits, chmods, utimes that put an
-- old mtime back, new files and dirs, deletions, renames of files and of whole directories, a directory
-- replaced by a symlink, changes at the top. What it cannot know (what a directory moved there brought along
-- below it) it says it does not know: the delta deletes and sends that again.
local ferry = require "ferry"
local core = require "ferry.core"
local delta = require "ferry.delta"
local listing = require "ferry.listing"
local remote = require "ferry.remote"
local helpers = require "support.helpers"
local W = require "support.workspaces"

local KEEP, EXCLUDES = { ".ferry-runtime" }, { "node_modules/" }

describe("the sandbox's listing", function()
  local tmp, root, sb

  before_each(function()
    tmp = helpers.tmpdir()
    root = tmp .. "/remote"
    sb = assert(ferry.open("local"))
  end)
  after_each(function()
    sb:close()
    helpers.rmtree(tmp)
  end)

  local function run(script)
    local res = assert(sb:exec(script))
    assert.equal(0, res.code, res.stderr)
    return res.stdout
  end

  -- The listing command: its tree and info.
  local function list(since)
    return assert(core.tree_parse_listing(run(listing.list_script(root, KEEP, EXCLUDES, { since = since }))))
  end

  -- What a sync command leaves: the marker with `id`, and its listing as the tree it records (the recorded
  -- tree overlaid with what changed since `since`, when the marker still held it).
  local function record(id, since, recorded)
    local out = run(remote.sync_script(root, { head = ":",
      tail = listing.record_lines(KEEP, EXCLUDES, true, id, since) }))
    local listed, info = assert(core.tree_parse_listing(out))
    if not info.incremental then return listed end
    local now, unknown = delta.current(recorded, listed, info)
    assert.same({}, unknown)
    return now
  end

  -- The recorded tree overlaid with the listing since `id` is the tree a full listing shows.
  local function assert_current(recorded, id, unknown)
    local listed, info = list(id)
    assert.is_true(info.incremental)
    local now, got_unknown = delta.current(recorded, listed, info)
    assert.same(unknown or {}, got_unknown)
    local full = list(nil)
    local paths = core.tree_diff(full, now, { compare = "stat" })
    if unknown then -- what is below an unknown directory is left out, and nothing else may differ
      for _, rel in ipairs(paths) do
        local below = false
        for _, u in ipairs(unknown) do below = below or rel:sub(1, #u + 1) == u .. "/" end
        assert.is_true(below, rel)
      end
    else
      assert.same({}, paths)
    end
    return listed, now
  end

  local function fill()
    W.write(root, "a/one.txt", "one\n")
    W.write(root, "a/b/two.txt", "two\n")
    W.write(root, "a/b/c/three.txt", "three\n")
    W.write(root, "top.txt", "top\n")
    W.write(root, "keep/still.txt", "still\n")
    W.symlink(root, "link", "top.txt")
    W.write(root, "node_modules/pkg/lib/index.js", "excluded\n")
    W.write(root, ".ferry-runtime/x", "ferry's own\n")
  end

  it("lists everything but the preserved names and what is pruned, each entry's inode and device", function()
    fill()
    local t, info = list(nil)
    assert.is_false(info.incremental)
    local paths = {}
    for rel in t:iter(nil, "") do paths[#paths + 1] = rel end
    assert.same({ "a", "a/b", "a/b/c", "a/b/c/three.txt", "a/b/two.txt", "a/one.txt", "keep", "keep/still.txt",
      "link", "node_modules", "top.txt" }, paths)
    local st = assert(core.fs_lstat(root .. "/a/one.txt"))
    assert.same({ "file", st.mode, 4, st.ino, st.dev }, { t:get("a/one.txt").kind, t:get("a/one.txt").mode,
      t:get("a/one.txt").size, t:get("a/one.txt").ino, t:get("a/one.txt").dev })
    assert.equal("top.txt", t:get("link").target)
  end)

  it("lists nothing when nothing changed since the marker, and everything for another marker", function()
    fill()
    local recorded = record("id-1")
    local listed, info = list("id-1")
    assert.same({ incremental = true, root_changed = false }, info)
    assert.equal(0, listed:count())
    local full, finfo = list("id-other") -- another sync's marker: everything
    assert.is_false(finfo.incremental)
    assert.same({}, core.tree_diff(recorded, full, { compare = "stat" }))
  end)

  local SCENARIOS = {
    { "a file edited in place", function() W.write(root, "a/b/c/three.txt", "THREE, longer\n") end },
    { "a file edited with its old mtime and size put back", function()
      local st = assert(core.fs_lstat(root .. "/a/one.txt"))
      W.write(root, "a/one.txt", "ONE\n")
      helpers.sh("touch -d @" .. string.format("%.9f", st.mtime) .. " " .. core.sh_quote(root .. "/a/one.txt"))
    end, changed = "a/one.txt" },
    { "a chmod", function() assert(core.fs_safe_chmod(root, "a/one.txt", 384)) end },
    { "files added, in a new dir too", function()
      W.write(root, "a/b/new.txt", "new\n")
      W.write(root, "a/new/deep/x.txt", "x\n")
    end },
    { "files and a dir deleted", function()
      assert(os.remove(root .. "/a/b/two.txt"))
      helpers.sh("rm -r " .. core.sh_quote(root .. "/a/b/c"))
    end },
    { "a file renamed within its dir and into another", function()
      assert(os.rename(root .. "/a/one.txt", root .. "/a/uno.txt"))
      assert(os.rename(root .. "/a/b/two.txt", root .. "/keep/two.txt"))
    end },
    { "a whole directory moved elsewhere", function()
      assert(os.rename(root .. "/a/b", root .. "/keep/b"))
    end, unknown = { "keep/b/c" } }, -- below the moved dir (a rename changes it), what it brought along
    { "a directory replaced by a symlink, and a file by a directory", function()
      helpers.sh("rm -r " .. core.sh_quote(root .. "/a/b") .. " && ln -s ../keep " .. core.sh_quote(root .. "/a/b"))
      assert(os.remove(root .. "/top.txt"))
      W.write(root, "top.txt/inner", "inner\n")
    end },
    { "changes at the top: a new entry, a removed one, a re-pointed symlink", function()
      W.write(root, "added.txt", "added\n")
      helpers.sh("rm -r " .. core.sh_quote(root .. "/keep"))
      assert(os.remove(root .. "/link"))
      W.symlink(root, "link", "a")
    end },
    { "the same directory deleted and made again", function()
      helpers.sh("rm -r " .. core.sh_quote(root .. "/a/b") .. " && mkdir " .. core.sh_quote(root .. "/a/b"))
      W.write(root, "a/b/two.txt", "two again\n")
    end },
  }

  for _, case in ipairs(SCENARIOS) do
    it(case[1] .. ": the recorded tree and what changed give the tree a full listing shows", function()
      fill()
      local recorded = record("id-1")
      case[2]()
      local listed = assert_current(recorded, "id-1", case.unknown)
      assert.is_true(listed:count() > 0)
      if case.changed then
        assert.equal(1, listed:get(case.changed).flags) -- changed, so hashed
        assert.equal(core.sha256_file(root .. "/" .. case.changed), listed:get(case.changed).sha256)
      end
    end)
  end

  it("says what it cannot know: a directory moved in with contents ferry never listed", function()
    fill()
    local recorded = record("id-1")
    assert(os.rename(root .. "/node_modules/pkg", root .. "/a/pkg"))
    assert_current(recorded, "id-1", { "a/pkg/lib" })
  end)

  it("records after a delta what changed since the earlier marker, and the next listing starts from it",
    function()
      fill()
      local recorded = record("id-1")
      W.write(root, "a/b/new.txt", "new\n")
      assert(os.remove(root .. "/a/one.txt"))
      local after = record("id-2", "id-1", recorded)
      assert.same({}, core.tree_diff(list(nil), after, { compare = "stat" }))
      assert.equal("id-2", W.read(root, ".ferry-runtime/sync.mark"))
      assert.equal(0, list("id-2"):count())
      W.write(root, "a/b/c/more.txt", "more\n")
      assert_current(after, "id-2")
    end)
end)
