-- The state file (ferry.state): a small JSON object and, beside it, the baseline and remote trees, each named
-- after the checksum the JSON records. The trees are written first and the JSON last, so a reader always
-- finds the trees its JSON names; a tree that is not the one recorded is refused by name.
local core = require "ferry.core"
local ferry = require "ferry"
local state = require "ferry.state"
local helpers = require "support.helpers"
local W = require "support.workspaces"

describe("the state file", function()
  local tmp, ws, remote, path

  before_each(function()
    tmp = helpers.tmpdir()
    ws, remote, path = tmp .. "/ws", tmp .. "/remote", tmp .. "/state.json"
    W.write(ws, "a.txt", "a\n")
    W.write(ws, "sub/b.txt", "b\n")
  end)
  after_each(function()
    helpers.rmtree(tmp)
  end)

  local function prepare()
    return assert(ferry.prepare { provider = "local", workspace = ws, remote_dir = remote, state = path })
  end

  local function tree_files()
    local out = {}
    for _, name in ipairs(core.fs_readdir(tmp)) do
      if name:find("^state%.json%.") then out[#out + 1] = name end
    end
    table.sort(out)
    return out
  end

  it("keeps the trees beside the JSON, named after the checksums it records, mode 0600", function()
    prepare()
    local st = assert(state.read(path))
    assert.equal(2, st.version)
    assert.matches("^%x+$", st.trees.baseline)
    assert.equal(64, #st.trees.remote)
    assert.matches("^%x+$", st.sync.id)
    assert.same({ "state.json.baseline-" .. st.trees.baseline:sub(1, 16) .. ".tree",
      "state.json.remote-" .. st.trees.remote:sub(1, 16) .. ".tree" }, tree_files())
    for _, name in ipairs(tree_files()) do assert.equal(384, core.fs_lstat(tmp .. "/" .. name).mode) end
    local baseline = assert(state.tree(path, st, "baseline"))
    assert.same({ "a.txt", "sub", "sub/b.txt" }, require("support.trees").paths(baseline))
    assert.equal(core.sha256("a\n"), baseline:get("a.txt").sha256)
    local text = helpers.read_file(path)
    assert.is_true(#text < 1024, "the JSON holds no tree: " .. #text .. " bytes")
  end)

  it("removes the trees it no longer names, and keeps on disk those that did not change", function()
    helpers.sh("find " .. core.sh_quote(ws) .. " -type f -exec touch -d @" .. (os.time() - 100) .. " {} +")
    prepare()
    local first = tree_files()
    local warm = prepare() -- nothing changed: no file rewritten
    assert.equal(1, warm.commands)
    assert.same(first, tree_files())
    W.write(ws, "a.txt", "changed\n")
    prepare()
    local now = tree_files()
    assert.equal(2, #now)
    assert.are_not.same(first, now)
    local st = assert(state.read(path))
    assert(state.tree(path, st, "baseline"))
    assert(state.tree(path, st, "remote"))
  end)

  it("refuses a tree that is not the one recorded: restore fails naming it, a delta starts over", function()
    prepare()
    local st = assert(state.read(path))
    local file = state.tree_path(path, "baseline", st.trees.baseline)
    local other = core.tree_new()
    other:add("x", { kind = "dir", mode = 493 })
    assert(other:write(file))
    local ok, err, code = ferry.restore { state = path }
    assert.is_nil(ok)
    assert.equal("restore: state: " .. file .. " is not the tree " .. path .. " recorded (checksum mismatch)", err)
    assert.equal("EINVAL", code)
    local res = prepare()
    assert.is_false(res.delta)
    assert.equal("state: " .. file .. " is not the tree " .. path .. " recorded (checksum mismatch)",
      res.delta_fallback)
    assert(ferry.restore { state = path }) -- the full sync wrote a new pair
    os.remove(state.tree_path(path, "baseline", assert(state.read(path)).trees.baseline))
    ok, err, code = ferry.restore { state = path }
    assert.is_nil(ok)
    assert.matches("^restore: state: tree_read " .. tmp:gsub("%p", "%%%0") .. "/state%.json%.baseline%-%x+%.tree: No "
      .. "such file or directory$", err)
    assert.equal("ENOENT", code)
  end)

  it("is refused by name when it is of a newer version or names no baseline", function()
    W.write(tmp, "state.json", '{"version": 3, "provider": "local", "remote_dir": "/r", "workspace": "/w"}')
    assert.same({ nil, "state: " .. path .. " has version 3, this ferry reads 1 and 2", "EINVAL" },
      { state.read(path) })
    W.write(tmp, "state.json", '{"version": 2, "provider": "local", "remote_dir": "/r", "workspace": "/w"}')
    assert.same({ nil, "state: " .. path .. " is not a ferry state file: no baseline tree", "EINVAL" },
      { state.read(path) })
    W.write(tmp, "state.json", '{"version": 2, "provider": "local", "remote_dir": "/r", "workspace": "/w", '
      .. '"trees": {"baseline": "../../etc/passwd"}}')
    assert.same({ nil, "state: " .. path .. " is not a ferry state file: trees.baseline is not a checksum",
      "EINVAL" }, { state.read(path) })
  end)
end)
