-- Names are data (issue 8, items 3 and 5): a workspace or file whose name looks like a token, or holds a
-- --secret-env value, travels and comes back as it is; a user's file that looks like one of ferry's temp
-- files is the user's, while the temp files a killed restore left are known by the run token recorded for
-- the workspace and cleaned up.
local core = require "ferry.core"
local ferry = require "ferry"
local helpers = require "support.helpers"
local W = require "support.workspaces"

local TOKEN = "sk-abcdefghijklmnopqrstuvwxyz0123456789"
local SECRET = "hunter2hunter2"

describe("names that look like secrets", function()
  local tmp, ws, remote, state
  before_each(function()
    tmp = helpers.tmpdir()
    ws, remote, state = tmp .. "/ws-" .. TOKEN, tmp .. "/remote", tmp .. "/state.json"
    -- the two key files mask alike ("key-***.txt"); the notes file holds a --secret-env value
    W.write(ws, "key-sk-aaaaaaaaaaaaaaaaaaaaaaaa1.txt", "one\n")
    W.write(ws, "key-sk-aaaaaaaaaaaaaaaaaaaaaaaa2.txt", "two\n")
    W.write(ws, "notes-" .. SECRET .. ".md", "notes\n")
    W.symlink(ws, "link-" .. SECRET, "notes-" .. SECRET .. ".md")
    W.mkdir(tmp, "remote")
  end)
  after_each(function()
    helpers.rmtree(tmp)
  end)

  it("prepare and restore them as they are, and an agent's edit comes back as a change", function()
    local res = assert(ferry.prepare { provider = "local", workspace = ws, remote_dir = remote, state = state,
      secrets = { SECRET } })
    assert.equal(ws, res.workspace)
    local st = assert(require("ferry.state").read(state))
    assert.equal(ws, st.workspace)
    assert.equal(384, core.fs_lstat(state).mode)
    local baseline = helpers.baseline(state)
    assert.equal("file", baseline["key-sk-aaaaaaaaaaaaaaaaaaaaaaaa1.txt"].kind)
    assert.equal("file", baseline["key-sk-aaaaaaaaaaaaaaaaaaaaaaaa2.txt"].kind)
    assert.equal("notes-" .. SECRET .. ".md", baseline["link-" .. SECRET].target)
    assert.equal("one\n", W.read(remote, "key-sk-aaaaaaaaaaaaaaaaaaaaaaaa1.txt"))
    -- the agent edits one of the look-alikes and the secret-named file
    W.write(remote, "key-sk-aaaaaaaaaaaaaaaaaaaaaaaa1.txt", "one, edited by the agent\n")
    W.write(remote, "notes-" .. SECRET .. ".md", "notes, edited\n")
    local got = assert(ferry.restore { state = state, secrets = { SECRET } })
    assert.same({ "key-sk-aaaaaaaaaaaaaaaaaaaaaaaa1.txt", "notes-" .. SECRET .. ".md" }, got.changed)
    assert.same({}, got.conflicts)
    assert.same({}, got.deleted)
    assert.equal("one, edited by the agent\n", W.read(ws, "key-sk-aaaaaaaaaaaaaaaaaaaaaaaa1.txt"))
    assert.equal("two\n", W.read(ws, "key-sk-aaaaaaaaaaaaaaaaaaaaaaaa2.txt"))
    assert.equal("notes, edited\n", W.read(ws, "notes-" .. SECRET .. ".md"))
    -- and again: the new baseline holds the real names, so nothing is seen as changed
    local again = assert(ferry.restore { state = state, secrets = { SECRET } })
    assert.same({}, again.changed)
    assert.same({}, again.conflicts)
  end)

  it("still redacts the free text: the provider string and warnings", function()
    local provider = "cmd:env FERRY_SPEC_KEY=" .. SECRET
    assert(ferry.prepare { provider = provider, workspace = ws, remote_dir = remote, state = state,
      secrets = { SECRET } })
    local text = helpers.read_file(state)
    assert.truthy(text:find('"provider":"cmd:env FERRY_SPEC_KEY=***"', 1, true))
    local ok, err = ferry.restore { state = state, secrets = { SECRET } }
    assert.is_nil(ok)
    assert.matches("^restore: the provider string in .* was redacted", err)
  end)
end)

describe("files named like ferry's temp files", function()
  local tmp, ws, remote, state
  local LOOKALIKE = ".ferry-tmp-0123456789abcdef"
  local LOOKALIKE2 = ".ferry-tmp-0123456789abcdef-0123456789abcdef"
  before_each(function()
    tmp = helpers.tmpdir()
    ws, remote, state = tmp .. "/ws", tmp .. "/remote", tmp .. "/state.json"
    W.write(ws, "a.txt", "a\n")
    W.write(ws, LOOKALIKE, "the user's file\n")
    W.write(ws, "sub/" .. LOOKALIKE2, "the user's other file\n")
    W.mkdir(tmp, "remote")
  end)
  after_each(function()
    helpers.rmtree(tmp)
  end)

  it("are the user's: prepare sends them, restore keeps them and brings an agent's edit back", function()
    local res = assert(ferry.prepare { provider = "local", workspace = ws, remote_dir = remote, state = state })
    assert.equal(4, res.files + res.dirs)
    assert.equal("the user's file\n", W.read(remote, LOOKALIKE))
    assert.equal("the user's other file\n", W.read(remote, "sub/" .. LOOKALIKE2))
    W.write(remote, LOOKALIKE, "edited by the agent\n")
    local got = assert(ferry.restore { state = state })
    assert.same({ LOOKALIKE }, got.changed)
    assert.same({}, got.deleted)
    assert.same({}, got.warnings)
    assert.equal("edited by the agent\n", W.read(ws, LOOKALIKE))
    assert.equal("the user's other file\n", W.read(ws, "sub/" .. LOOKALIKE2))
  end)

  it("left by a killed restore are cleaned up by the next one and never sent", function()
    assert(ferry.prepare { provider = "local", workspace = ws, remote_dir = remote, state = state })
    W.write(remote, "a.txt", "new a\n")
    -- a restore in a child process kills itself with -9 right before its write of a.txt lands: its temp
    -- file stays beside a.txt
    local code = string.format([[
      require("ferry").restore { state = %q, before_write = function(path, op)
        if path == "a.txt" and op == "write" then os.execute("kill -9 " .. require("ferry.core").getpid()) end
      end }]], state)
    os.execute(core.sh_quote(helpers.ferry_bin) .. " -e " .. core.sh_quote(code) .. " 2>/dev/null")
    local _, temps = W.full(ws) -- temp-shaped names, whatever their token: the look-alike has one
    assert.same({ ".", "sub/" .. LOOKALIKE2 }, { temps[1]:sub(1, 1), temps[2] })
    local leftover = temps[1]
    assert.equal("a\n", W.read(ws, "a.txt"))
    assert.equal(".ferry-tmp-", leftover:sub(1, 11))
    assert.are_not.equal(core.TEMP_TOKEN, require("ferry.snapshot").temp_token(leftover))
    -- a prepare leaves it out of what it sends; the next restore removes it, and the look-alikes stay
    local res = assert(ferry.prepare { provider = "local", workspace = ws, remote_dir = remote, state = state })
    assert.is_nil(core.fs_lstat(remote .. "/" .. leftover))
    assert.equal("the user's file\n", W.read(remote, LOOKALIKE))
    assert.is_nil(helpers.baseline(res.state)[leftover])
    W.write(remote, "a.txt", "new a\n")
    local got = assert(ferry.restore { state = state })
    assert.same({ "a.txt" }, got.changed)
    assert.is_nil(core.fs_lstat(ws .. "/" .. leftover))
    assert.same({ "sub/" .. LOOKALIKE2 }, select(2, W.full(ws)))
    assert.equal("new a\n", W.read(ws, "a.txt"))
    assert.equal("the user's file\n", W.read(ws, LOOKALIKE))
    assert.equal("the user's other file\n", W.read(ws, "sub/" .. LOOKALIKE2))
  end)
end)
