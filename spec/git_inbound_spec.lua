-- Git-aware sync, inbound: the working tree as git lists it plus a shallow history (ferry.git_pack) built
-- into a repository in a real sandbox (ferry.git_remote), checked with git inside the sandbox.
local core = require "ferry.core"
local excludes = require "ferry.excludes"
local git = require "ferry.git"
local git_pack = require "ferry.git_pack"
local git_remote = require "ferry.git_remote"
local helpers = require "support.helpers"
local R = require "support.git_repos"
local sandboxes = require "support.sandboxes"

local DEFAULT = excludes.compile(excludes.DEFAULT)

-- The files git lists, less ferry's default excludes, as one tar stream extracted into the remote dir.
local function send_tree(sb, ws, remote_dir)
  local info = assert(git.detect(ws))
  local files = assert(git.files(info))
  local names = {}
  for _, rel in ipairs(files.list) do
    if not DEFAULT(rel, false) then names[#names + 1] = rel end
  end
  local writer = assert(core.tar_writer(ws, names, {}))
  -- as a full sync does: everything but the repository and the runtime dir goes first
  local rd = core.sh_quote(remote_dir)
  local res = assert(sb:pipe_in("mkdir -p " .. rd .. " && cd " .. rd .. " && find . -mindepth 1 -maxdepth 1 "
    .. "! -name .git ! -name .ferry-runtime -exec rm -rf {} + && tar -x -f - -C " .. rd,
    function() return writer:read() end))
  writer:close()
  assert.equal(0, res.code, res.stderr)
  return info, files
end

local in_sandbox = R.in_sandbox

local function sandbox_status(sb, remote_dir)
  return in_sandbox(sb, remote_dir, "git status --porcelain=v1 --untracked-files=all")
end

local function ship(sb, ws, remote_dir, opts)
  local info, files = send_tree(sb, ws, remote_dir)
  opts = opts or {}
  opts.not_sent = opts.not_sent or git.not_sent(files, DEFAULT)
  local pack = assert(git_pack.pack(info, opts))
  local report, err = git_remote.inbound(sb, remote_dir, pack)
  git_pack.cleanup(pack)
  assert(report, err)
  return report, pack, info
end

for _, label in ipairs { "local", "bwrap" } do
  describe("git inbound (" .. label .. ")", function()
    local box, sb, repo, ws, rd

    before_each(function()
      box = sandboxes.make(label)
      sb = box:open()
      repo = R.make { commits = 12 }
      ws, rd = repo.dir, box.root
    end)

    after_each(function()
      sb:close()
      box:cleanup()
      helpers.rmtree(repo.tmp)
    end)

    it("gives the sandbox D commits, the branch at HEAD and exactly the host's git status", function()
      R.dirty(ws)
      local report, pack = ship(sb, ws, rd, { depth = 5 })
      assert.same({ status = "ok", head = repo.head }, report)
      assert.equal("full", pack.mode)
      assert.equal(5, pack.commits)
      assert.equal(1, #pack.shallow)
      assert.equal("5\n", in_sandbox(sb, rd, "git log --oneline | wc -l | tr -d ' '"))
      assert.equal("feature\n", in_sandbox(sb, rd, "git rev-parse --abbrev-ref HEAD"))
      assert.equal("true\n", in_sandbox(sb, rd, "git rev-parse --is-shallow-repository"))
      local host = R.status(ws)
      assert.truthy(host:find("R  src/mod0/file6.txt -> src/renamed.txt", 1, true))
      assert.truthy(host:find(" A intent.txt", 1, true))
      assert.equal(host, sandbox_status(sb, rd))
      assert.equal(R.git(ws, { "ls-files", "-s" }), in_sandbox(sb, rd, "git ls-files -s"))
      assert.equal(R.git(ws, { "diff", "--cached", "--full-index" }),
        in_sandbox(sb, rd, "git diff --cached --full-index"))
      -- ignored files stayed home; the inputs are gone
      assert.is_nil(core.fs_lstat(box.host_root .. "/debug.log"))
      assert.is_nil(core.fs_lstat(box.host_root .. "/ignored-dir"))
      assert.is_nil(core.fs_lstat(box.host_root .. "/" .. git_remote.INPUTS))
      -- the agent can commit, as the host's user
      in_sandbox(sb, rd, "mkdir -p .ferry-runtime/shell && echo secret > .ferry-runtime/shell/auth.json")
      in_sandbox(sb, rd, "git add -A && git commit -q -m 'agent work'")
      assert.equal("", in_sandbox(sb, rd, "git ls-files .ferry-runtime"))
      assert.equal("Host User <host@example.com>\n", in_sandbox(sb, rd, "git log -1 --format='%an <%ae>'"))
      assert.equal("", sandbox_status(sb, rd))
      assert.equal("true\n", in_sandbox(sb, rd, "git fsck --no-progress >/dev/null 2>&1 && echo true"))
    end)

    it("ships one commit at depth 1, and the whole history at depth 0", function()
      ship(sb, ws, rd, { depth = 1 })
      assert.equal("1\n", in_sandbox(sb, rd, "git rev-list --count HEAD"))
      local _, pack = ship(sb, ws, rd, { depth = 0 })
      assert.same({}, pack.shallow)
      assert.equal("12\n", in_sandbox(sb, rd, "git rev-list --count HEAD"))
      assert.equal("false\n", in_sandbox(sb, rd, "git rev-parse --is-shallow-repository"))
      assert.equal("", sandbox_status(sb, rd))
    end)

    it("keeps a detached HEAD detached", function()
      R.git(ws, { "checkout", "-q", "--detach", "HEAD~2" })
      local report, pack = ship(sb, ws, rd, { depth = 3 })
      assert.equal("ok", report.status)
      assert.is_nil(pack.branch)
      assert.equal(R.head(ws) .. "\n", in_sandbox(sb, rd, "git rev-parse HEAD"))
      assert.equal("detached\n", in_sandbox(sb, rd, "git symbolic-ref -q HEAD || echo detached"))
      assert.equal(R.status(ws), sandbox_status(sb, rd))
    end)

    it("builds a repository without commits from a host whose branch is unborn", function()
      local fresh = helpers.tmpdir()
      R.git(fresh, { "init", "-q", "-b", "main" })
      R.git(fresh, { "config", "user.name", "Unborn User" })
      helpers.write_file(fresh .. "/a.txt", "a\n")
      helpers.write_file(fresh .. "/b.txt", "b\n")
      R.git(fresh, { "add", "a.txt" })
      local report, pack = ship(sb, fresh, rd)
      assert.equal("unborn", pack.mode)
      assert.equal("ok", report.status)
      assert.equal("A  a.txt\n?? b.txt\n", sandbox_status(sb, rd))
      assert.equal("refs/heads/main\n", in_sandbox(sb, rd, "git symbolic-ref HEAD"))
      assert.equal("Unborn User\n", in_sandbox(sb, rd, "git config user.name"))
      helpers.rmtree(fresh)
    end)

    it("sends only the new commits when the sandbox holds the earlier head (thin), nothing when it is HEAD", function()
      local _, first = ship(sb, ws, rd, { depth = 3 })
      R.commit(ws, { ["src/x.txt"] = "x\n" }, "host one")
      R.commit(ws, { ["src/y.txt"] = "y\n" }, "host two")
      R.dirty(ws)
      local report, pack = ship(sb, ws, rd, { depth = 3, have = repo.head })
      assert.equal("ok", report.status)
      assert.equal("thin", pack.mode)
      assert.equal(2, pack.commits)
      assert.is_true(pack.bundle_bytes < first.bundle_bytes / 4, pack.bundle_bytes .. " vs " .. first.bundle_bytes)
      assert.equal("5\n", in_sandbox(sb, rd, "git rev-list --count HEAD"))
      assert.equal(R.head(ws) .. "\n", in_sandbox(sb, rd, "git rev-parse HEAD"))
      assert.equal(R.status(ws), sandbox_status(sb, rd))
      local again
      report, again = ship(sb, ws, rd, { have = R.head(ws) })
      assert.equal("same", again.mode)
      assert.equal(0, again.bundle_bytes)
      assert.equal("ok", report.status)
      assert.equal(R.status(ws), sandbox_status(sb, rd))
    end)

    it("reports need-full when the sandbox lost the commit a delta builds on, then a full pack works", function()
      ship(sb, ws, rd, { depth = 2 })
      in_sandbox(sb, rd, "rm -rf .git")
      R.commit(ws, { ["src/x.txt"] = "x\n" }, "host one")
      local report, pack = ship(sb, ws, rd, { depth = 2, have = repo.head })
      assert.equal("thin", pack.mode)
      assert.same({ status = "need-full", why = "no repository" }, report)
      report = ship(sb, ws, rd, { depth = 2 })
      assert.equal("ok", report.status)
      assert.equal("2\n", in_sandbox(sb, rd, "git rev-list --count HEAD"))
    end)

    it("fails with git's message when a step fails in the sandbox", function()
      R.dirty(ws)
      local info = send_tree(sb, ws, rd)
      local pack = assert(git_pack.pack(info, { depth = 2 }))
      helpers.write_file(pack.dir .. "/" .. git_pack.NAMES.patch,
        "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n")
      local ok, err, code = git_remote.inbound(sb, rd, pack)
      git_pack.cleanup(pack)
      assert.is_nil(ok)
      assert.equal("EIO", code)
      assert.truthy(err:find("^git in the sandbox: .*x: does not exist in index; ferry%-git: failed: git apply "
        .. "%-%-cached %(the staged changes%)$"), err)
    end)

    it("marks tracked files ferry keeps home skip-worktree, so git status does not show them deleted", function()
      R.commit(ws, { ["build/out.txt"] = "built\n", ["vendor/keep/i.js"] = "tracked anyway\n" }, "tracked build")
      local info = assert(git.detect(ws))
      local files = assert(git.files(info))
      assert.same({ "build/out.txt", "vendor/keep/i.js" }, git.not_sent(files, DEFAULT))
      local report = ship(sb, ws, rd, { depth = 2 })
      assert.equal("ok", report.status)
      assert.is_nil(core.fs_lstat(box.host_root .. "/build"))
      assert.equal("", sandbox_status(sb, rd))
      assert.equal(R.status(ws), sandbox_status(sb, rd))
    end)
  end)
end

describe("git inbound in a sandbox without git", function()
  local box, sb, repo

  before_each(function()
    box = sandboxes.make("local")
    box.provider = "cmd:env PATH=" .. R.path_without_git()
    sb = box:open()
    repo = R.make { commits = 4 }
  end)

  after_each(function()
    sb:close()
    box:cleanup()
    helpers.rmtree(repo.tmp)
  end)

  it("reports no-git and builds nothing; the outbound side says the same", function()
    local res = assert(sb:exec("command -v git || echo none"))
    assert.equal("none\n", res.stdout)
    local report = ship(sb, repo.dir, box.root, { depth = 2 })
    assert.same({ status = "no-git" }, report)
    assert.is_nil(core.fs_lstat(box.root .. "/.git"))
    assert.truthy(core.fs_lstat(box.root .. "/src/mod0/file1.txt")) -- the files are there, without history
    local dest = box.tmp .. "/out.bundle"
    local out = assert(git_remote.outbound(sb, box.root, { ref = "refs/heads/feature", base = repo.head }, dest))
    assert.equal("no-git", out.status)
    assert.is_nil(out.bundle)
  end)
end)
