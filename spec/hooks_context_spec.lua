-- The hook order and every ctx field, as scripts/README.md "Hooks and their context" documents them: a prepare
-- and a restore on the local provider with an adapter that records what each hook sees.
local ferry = require "ferry"
local helpers = require "support.helpers"
local sandboxes = require "support.sandboxes"
local W = require "support.workspaces"

local function keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

describe("adapter hooks", function()
  local box, tmp, ws, assets_dir
  before_each(function()
    box = sandboxes.make("local")
    tmp = helpers.tmpdir()
    ws = tmp .. "/ws"
    assets_dir = tmp .. "/skills"
    W.write(ws, "a.txt", "a\n")
    W.write(assets_dir, "skill.md", "a skill\n")
  end)
  after_each(function()
    box:cleanup()
    helpers.rmtree(tmp)
  end)

  it("run in the documented order, with the assets in the sandbox by after_sync and every ctx field", function()
    local seen = {}
    local function record(name)
      return function(ctx)
        seen[#seen + 1] = { name = name, keys = keys(ctx), asset_dirs = keys(ctx.asset_dirs),
          result = ctx.result and true or false }
        if name == "after_sync" then
          seen.skill = W.read(ctx.asset_dirs.skills, "skill.md")
          seen.runtime_dir, seen.adapter, seen.provider = ctx.runtime_dir, ctx.adapter, ctx.provider
        elseif name == "before_restore" then
          seen.state, seen.copy_back = ctx.state, ctx.copy_back_credentials
        end
      end
    end
    local adapter = { name = "probe", excludes = {}, preserve = {}, assets = function(ctx)
      seen[#seen + 1] = { name = "assets", keys = keys(ctx), asset_dirs = keys(ctx.asset_dirs), result = false }
      return { skills = { dir = assets_dir } }
    end, hooks = { before_sync = record("before_sync"), after_sync = record("after_sync"),
      before_restore = record("before_restore"), after_restore = record("after_restore") } }
    local state = tmp .. "/state.json"
    local res = assert(ferry.prepare { provider = "local", workspace = ws, remote_dir = box.root, state = state,
      adapter = adapter })
    assert(ferry.restore { state = res.state, adapter = adapter })
    local common = { "adapter", "asset_dirs", "env", "home", "log", "provider", "remote_dir", "runtime_dir", "sb",
      "workspace" }
    local with_result = { "adapter", "asset_dirs", "env", "home", "log", "provider", "remote_dir", "result",
      "runtime_dir", "sb", "workspace" }
    local restoring = { "adapter", "asset_dirs", "copy_back_credentials", "env", "home", "log", "provider",
      "remote_dir", "result", "runtime_dir", "sb", "state", "workspace" }
    assert.same({
      { name = "assets", keys = common, asset_dirs = {}, result = false },
      { name = "before_sync", keys = common, asset_dirs = { "skills" }, result = false },
      { name = "after_sync", keys = with_result, asset_dirs = { "skills" }, result = true },
      { name = "before_restore", keys = restoring, asset_dirs = { "skills" }, result = true },
      { name = "after_restore", keys = restoring, asset_dirs = { "skills" }, result = true },
    }, { table.unpack(seen) })
    assert.equal("a skill\n", seen.skill) -- the assets arrived before after_sync
    assert.equal(box.root .. "/.ferry-runtime", seen.runtime_dir)
    assert.equal(box.root .. "/.ferry-runtime/probe/skills", res.asset_dirs.skills)
    assert.equal("probe", seen.adapter)
    assert.equal("local", seen.provider)
    assert.equal(state, seen.state) -- the state file's path
    assert.is_false(seen.copy_back)
  end)
end)
