-- Git-aware sync, hostile sandbox: bundles crafted as a compromised sandbox could send them are refused by
-- ferry.git_import.import with a clear message, and nothing reaches the host repository (refs and object
-- files unchanged, the hostile commits absent).
local git = require "ferry.git"
local git_import = require "ferry.git_import"
local helpers = require "support.helpers"
local R = require "support.git_repos"

local BASE_REF = "refs/heads/feature"

describe("ferry.git_import.import, hostile bundles", function()
  local repo, ws, sbx, info, expect, path

  -- The host repository's refs and object files (a fetch that failed half-way would leave a tmp_pack).
  local function host_state()
    return R.refs(ws) .. R.sh(ws, "find .git/objects -type f | sort")
  end

  -- A commit on the sandbox clone's branch whose root tree is HEAD's plus `lines` (mktree input lines).
  local function craft(lines, message)
    local tree = R.git(sbx, { "mktree" }, { stdin = R.git(sbx, { "ls-tree", "HEAD" }) .. table.concat(lines) })
    local commit = R.git(sbx, { "commit-tree", tree:match("%x+"), "-p", "HEAD", "-m", message or "crafted" })
    commit = commit:match("%x+")
    R.git(sbx, { "update-ref", BASE_REF, commit })
    return commit
  end

  local function blob(text)
    return R.git(sbx, { "hash-object", "-w", "--stdin" }, { stdin = text }):match("%x+")
  end

  -- A tree holding the chain of dirs `names` with `leaf` (an mktree line) at the bottom.
  local function nested(names, leaf)
    local line = leaf
    for i = #names, 1, -1 do
      local tree = R.git(sbx, { "mktree" }, { stdin = line }):match("%x+")
      line = "040000 tree " .. tree .. "\t" .. names[i] .. "\n"
    end
    return line
  end

  local function bundle(...)
    R.git(sbx, { "bundle", "create", "-q", path, ... })
    return path
  end

  local function refused(expected_pattern, opts, code)
    local before = host_state()
    local ok, err, ecode = git_import.import(info, path, expect, opts)
    assert.is_nil(ok)
    assert.equal(code or "EPERM", ecode)
    assert.truthy(err:find(expected_pattern), err)
    assert.equal(before, host_state())
    return err
  end

  before_each(function()
    repo = R.make { commits = 12 }
    ws = repo.dir
    sbx = repo.tmp .. "/sbx"
    R.git(repo.tmp, { "clone", "-q", "--depth", "5", "--branch", "feature", "file://" .. ws, sbx })
    R.git(sbx, { "config", "user.name", "Agent" })
    R.git(sbx, { "config", "user.email", "agent@sandbox" })
    info = assert(git.detect(ws))
    expect = { ref = BASE_REF, branch = "feature", base = repo.head }
    path = repo.tmp .. "/out.bundle"
  end)

  after_each(function() helpers.rmtree(repo.tmp) end)

  it("accepts a clean bundle and writes no ref", function()
    local good = craft({ "120000 blob " .. blob("src/mod0/file0.txt") .. "\tlink\n" }, "a symlink inside")
    bundle(BASE_REF, "^" .. repo.head)
    local before = R.refs(ws)
    local imported = assert(git_import.import(info, path, expect))
    assert.same({ new = good, commits = 1 }, imported)
    assert.is_true(R.has(ws, good))
    assert.equal(before, R.refs(ws))
  end)

  it("refuses a bundle carrying another ref, a tag, or not the expected ref", function()
    local evil = craft({ "100644 blob " .. blob("evil\n") .. "\tevil.txt\n" })
    R.git(sbx, { "update-ref", "refs/heads/evil", evil })
    R.git(sbx, { "reset", "-q", "--soft", repo.head })
    R.git(sbx, { "update-ref", BASE_REF, repo.head })
    R.git(sbx, { "commit", "-q", "--allow-empty", "-m", "ok" })
    bundle(BASE_REF, "refs/heads/evil", "^" .. repo.head)
    assert.equal("git bundle refused: it carries refs/heads/evil; only refs/heads/feature is expected (refs: "
      .. "refs/heads/feature, refs/heads/evil)", refused("refs/heads/evil"))
    assert.is_false(R.has(ws, evil))

    R.git(sbx, { "tag", "-a", "v9", "-m", "evil tag", evil })
    bundle(BASE_REF, "refs/tags/v9", "^" .. repo.head)
    refused("^git bundle refused: it carries refs/tags/v9; only refs/heads/feature is expected")
    assert.equal("", R.git(ws, { "tag" }))

    bundle("refs/heads/evil", "^" .. repo.head)
    refused("^git bundle refused: it carries refs/heads/evil; only refs/heads/feature is expected %(refs: "
      .. "refs/heads/evil%)$")
  end)

  it("refuses trees with a .git entry (in any case, and in the forms other filesystems read as .git)", function()
    local hook = "100755 blob " .. blob("echo pwned\n") .. "\tpost-checkout\n"
    local c = craft({ nested({ "sub", ".git", "hooks" }, hook) })
    bundle(BASE_REF, "^" .. repo.head)
    local dotgit = "^git bundle refused: fsck: error: object %x+: hasDotgit: contains '%.git'; fatal: fsck error in "
      .. "packed object$"
    refused(dotgit)
    assert.is_false(R.has(ws, c))
    -- another case, and ".g\u{200c}it", which HFS+ reads as .git
    for _, name in ipairs { ".GIT", ".gi\u{200c}t" } do
      R.git(sbx, { "update-ref", BASE_REF, repo.head })
      R.git(sbx, { "reset", "-q", "--soft", repo.head })
      c = craft({ nested({ name, "hooks" }, hook) })
      bundle(BASE_REF, "^" .. repo.head)
      refused(dotgit)
      assert.is_false(R.has(ws, c))
    end
  end)

  it("refuses '..' path components and symlinks that leave the work tree", function()
    craft({ "100644 blob " .. blob("x\n") .. "\t..\n" })
    bundle(BASE_REF, "^" .. repo.head)
    refused("^git bundle refused: fsck: error: object %x+: hasDotdot: contains '%.%.'")

    local cases = {
      { { "120000 blob " .. blob("/etc/passwd") .. "\tabs\n" }, "'abs' with an absolute target %(\"/etc/passwd\"%)" },
      { { "120000 blob " .. blob("../../etc") .. "\tup\n" }, "'up' with a target outside the work tree" },
      -- d/up resolves to the top: fine by itself; d/out goes through it and one level further up
      { { nested({ "d" }, "120000 blob " .. blob("..") .. "\tup\n120000 blob " .. blob("up/../x") .. "\tout\n") },
        "'d/out' with a target outside the work tree" },
    }
    for _, case in ipairs(cases) do
      R.git(sbx, { "update-ref", BASE_REF, repo.head })
      R.git(sbx, { "reset", "-q", "--soft", repo.head })
      craft(case[1])
      bundle(BASE_REF, "^" .. repo.head)
      refused("adds the symlink " .. case[2])
    end
    -- unless the caller allows them (as restore's allow_outside_symlinks)
    assert(git_import.import(info, path, expect, { allow_outside_symlinks = true }))
  end)

  it("refuses a truncated bundle, and what is not a v2 bundle", function()
    craft({ "100644 blob " .. blob(helpers.random_bytes(20000)) .. "\tbig.bin\n" })
    bundle(BASE_REF, "^" .. repo.head)
    local whole = helpers.read_file(path)
    helpers.write_file(path, whole:sub(1, #whole // 2))
    refused("^git bundle refused: its pack is damaged or incomplete: fatal: early EOF")
    helpers.write_file(path, "PACK" .. whole)
    refused('^git bundle refused: not a git bundle %(it starts with "PACK# v2 git bun"%)$')
    R.git(sbx, { "bundle", "create", "-q", "--version=3", path, BASE_REF, "^" .. repo.head })
    refused("^git bundle refused: a v3 bundle %(object%-format=sha1%); only v2 bundles are accepted$")
  end)

  it("refuses a bundle of another repository", function()
    local other = R.make { commits = 3, content = function(f, v) return "other " .. f .. " " .. v .. "\n" end }
    R.git(other.dir, { "bundle", "create", "-q", path, BASE_REF })
    refused("^git bundle refused: its history is unrelated to refs/heads/feature %(no commit in common with "
      .. repo.head .. "%)")
    assert.is_false(R.has(ws, other.head))
    helpers.rmtree(other.tmp)
  end)

  it("refuses a bundle or an object over its limit", function()
    local text = ("0123456789"):rep(500)
    craft({ "100644 blob " .. blob(text) .. "\tfive-k.txt\n" })
    bundle(BASE_REF, "^" .. repo.head)
    local size = #helpers.read_file(path)
    assert.equal("git bundle refused: " .. path .. " is " .. size .. " bytes, over the 100 byte limit",
      refused("over the 100 byte limit", { max_bytes = 100 }, "EFBIG"))
    refused("^git bundle refused: blob " .. R.git(sbx, { "hash-object", "--stdin" }, { stdin = text }):match("%x+")
      .. " is 5000 bytes, over the 1000 byte limit$", { max_object_bytes = 1000 })
  end)
end)
