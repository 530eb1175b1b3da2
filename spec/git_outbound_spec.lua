-- Git-aware sync, outbound: the agent's commits made in a real sandbox come back as a bundle, verified,
-- imported and integrated into the host repository (ferry.git_remote.outbound, ferry.git_import,
-- ferry.git_integrate), next to the file merge of ferry.restore (prepare and restore run with `.git`
-- excluded, and git mode off: these specs run its building blocks by hand).
local core = require "ferry.core"
local ferry = require "ferry"
local git = require "ferry.git"
local git_integrate = require "ferry.git_integrate"
local git_pack = require "ferry.git_pack"
local git_remote = require "ferry.git_remote"
local helpers = require "support.helpers"
local R = require "support.git_repos"
local sandboxes = require "support.sandboxes"

local in_sandbox, fsck_clean = R.in_sandbox, R.fsck_clean

for _, label in ipairs { "local", "bwrap" } do
  describe("git outbound (" .. label .. ")", function()
    local box, sb, repo, ws, rd, state
    local job -- what prepare sent: info, expect, staged paths

    local function prepare(depth)
      assert(ferry.prepare { provider = sb, workspace = ws, remote_dir = rd, excludes = git.EXCLUDES, state = state,
        git = false }) -- the building blocks by hand, below
      local info = assert(git.detect(ws))
      local pack = assert(git_pack.pack(info, { depth = depth or 5 }))
      local report = assert(git_remote.inbound(sb, rd, pack))
      git_pack.cleanup(pack)
      assert.equal("ok", report.status)
      job = { info = info, staged = pack.staged_paths,
        expect = { ref = info.ref, branch = info.branch, base = info.head } }
    end

    local function restore(opts)
      local back = assert(ferry.restore { state = state, sb = sb })
      assert.same({}, back.conflicts)
      local result, err, code = git_integrate.bring_back(sb, rd, job.info, job.expect, opts)
      assert(result, tostring(err) .. " " .. tostring(code))
      assert(git_integrate.sync_index(job.info, result, job.staged))
      return result, back
    end

    before_each(function()
      box = sandboxes.make(label)
      sb = box:open()
      repo = R.make { commits = 12 }
      ws, rd, state = repo.dir, box.root, box.tmp .. "/state.json"
    end)

    after_each(function()
      sb:close()
      box:cleanup()
      helpers.rmtree(repo.tmp)
    end)

    it("fast-forwards the user's branch and leaves git status showing only the real changes", function()
      R.dirty(ws)
      prepare(5)
      local edited = R.path_of(9)
      in_sandbox(sb, rd, "git add -A && git commit -q -m 'agent: take the WIP' && echo new > agent.txt && "
        .. "git add agent.txt && git commit -q -m 'agent: add agent.txt' && echo more >> " .. edited)
      local sandbox_head = in_sandbox(sb, rd, "git rev-parse HEAD"):match("%x+")
      local result = restore()
      assert.same({ mode = "fast-forward", ref = "refs/heads/feature", old = repo.head, new = sandbox_head,
        commits = 2, kind = "thin", on = "refs/heads/feature", dirty = { { xy = " M", path = edited } } },
        { mode = result.mode, ref = result.ref, old = result.old, new = result.new, commits = result.commits,
          kind = result.kind, on = result.on, dirty = result.dirty })
      assert.equal("agent: add agent.txt\nagent: take the WIP\ncommit 12\n",
        R.git(ws, { "log", "-3", "--format=%s", "feature" }))
      assert.equal(sandbox_head, R.head(ws))
      fsck_clean(ws)
      assert.equal(" M " .. edited .. "\n", R.status(ws))
      assert.equal(in_sandbox(sb, rd, "git ls-files -s"), R.git(ws, { "ls-files", "-s" }))
      assert.equal("new\n", helpers.read_file(ws .. "/agent.txt"))
      -- nothing but git itself wrote inside .git: no conflict copies, no temp refs
      assert.equal(sandbox_head .. " refs/heads/feature\n", R.refs(ws))
      assert.equal("", R.sh(ws, "find .git -name '*.ferry-remote*'"))
    end)

    it("keeps the agent's commits on ferry/<branch> when the user's branch moved, and leaves it alone", function()
      prepare(5)
      in_sandbox(sb, rd, "echo one > a1.txt && git add a1.txt && git commit -q -m 'agent one'")
      local user = R.commit(ws, { ["user.txt"] = "user\n" }, "user meanwhile")
      local result = restore()
      assert.equal("ferry-ref", result.mode)
      assert.equal("refs/heads/ferry/feature", result.ref)
      assert.is_nil(result.old)
      assert.equal(1, result.commits)
      assert.equal(user, R.line(ws, { "rev-parse", "refs/heads/feature" }))
      assert.equal(user, R.head(ws))
      assert.equal("agent one\ncommit 12\n", R.git(ws, { "log", "-2", "--format=%s", "ferry/feature" }))
      fsck_clean(ws)
      -- the file came back through the file merge; the user's index was not touched
      assert.equal("?? a1.txt\n", R.status(ws))
      -- a second round moves the same ferry ref forward
      in_sandbox(sb, rd, "echo two > a2.txt && git add a2.txt && git commit -q -m 'agent two'")
      result = restore()
      assert.equal("ferry-ref", result.mode)
      assert.equal("refs/heads/ferry/feature", result.ref)
      assert.equal("agent two\nagent one\n", R.git(ws, { "log", "-2", "--format=%s", "ferry/feature" }))
      assert.equal(user, R.line(ws, { "rev-parse", "refs/heads/feature" }))
    end)

    it("changes no ref when the agent made no commit", function()
      prepare(3)
      in_sandbox(sb, rd, "echo edit >> " .. R.path_of(1))
      local before = R.refs(ws)
      local result = restore()
      assert.equal("none", result.mode)
      assert.equal(0, result.commits)
      assert.equal("none", result.kind)
      assert.equal(before, R.refs(ws))
      assert.equal(" M " .. R.path_of(1) .. "\n", R.status(ws))
    end)

    it("says so when the branch is gone from the sandbox, and refuses a bundle over its limit", function()
      prepare(3)
      in_sandbox(sb, rd, "git checkout -q -b other && echo x > x.txt && git add x.txt && git commit -q -m x && "
        .. "git branch -q -D feature")
      local before = R.refs(ws)
      local result = restore()
      assert.equal("none", result.mode)
      assert.equal("refs/heads/other", result.on)
      assert.equal("the sandbox has no refs/heads/feature any more: no commits came back", result.warning)
      assert.equal(before, R.refs(ws))

      in_sandbox(sb, rd, "git checkout -q -b feature")
      local dest = box.tmp .. "/out.bundle"
      local ok, err, code = git_remote.outbound(sb, rd, { ref = "refs/heads/feature", base = repo.head }, dest,
        { max_bytes = 100 })
      assert.is_nil(ok)
      assert.equal("git bundle from the sandbox: the bundle is over the 100 byte limit", err)
      assert.equal("EFBIG", code)
      assert.is_nil(core.fs_lstat(dest))
    end)

    it("asks for a full bundle when the host lost the commit it sent, and keeps the result on a ferry ref", function()
      prepare(5)
      in_sandbox(sb, rd, "echo one > a1.txt && git add a1.txt && git commit -q -m 'agent one'")
      R.sh(ws, "git reset -q --hard HEAD~1 && git reflog expire --expire=now --all && git gc -q --prune=now")
      assert.is_false(R.has(ws, repo.head))
      local result = restore()
      assert.equal("full", result.kind)
      assert.equal("ferry-ref", result.mode)
      assert.equal("refs/heads/ferry/feature", result.ref)
      assert.equal("agent one\ncommit 12\ncommit 11\n", R.git(ws, { "log", "-3", "--format=%s", "ferry/feature" }))
      assert.is_false(R.try(ws, { "rev-parse", "--is-shallow-repository" }).stdout == "true\n")
      fsck_clean(ws)
    end)

    it("creates the branch of a host that had no commit yet", function()
      ws = repo.tmp .. "/fresh"
      R.sh(repo.tmp, "mkdir fresh && cd fresh && git init -q -b main && git config user.name U && "
        .. "git config user.email u@x && echo a > a.txt && echo b > b.txt && git add a.txt")
      prepare()
      assert.is_nil(job.expect.base)
      in_sandbox(sb, rd, "git add -A && git commit -q -m 'agent: first commit'")
      local result = restore()
      assert.equal("fast-forward", result.mode)
      assert.equal("refs/heads/main", result.ref)
      assert.is_nil(result.old)
      assert.equal(1, result.commits)
      assert.equal("full", result.kind)
      assert.equal("agent: first commit\n", R.git(ws, { "log", "--format=%s" }))
      assert.equal("", R.status(ws))
      fsck_clean(ws)
    end)

    it("fast-forwards a detached HEAD", function()
      R.git(ws, { "checkout", "-q", "--detach", "HEAD~1" })
      local base = R.head(ws)
      prepare(3)
      in_sandbox(sb, rd, "echo one > a1.txt && git add a1.txt && git commit -q -m 'agent one'")
      local result = restore()
      assert.equal("fast-forward", result.mode)
      assert.equal("HEAD", result.ref)
      assert.equal(base, result.old)
      assert.equal("agent one\n", R.git(ws, { "log", "-1", "--format=%s" }))
      assert.equal(1, R.try(ws, { "symbolic-ref", "-q", "HEAD" }).code)
      assert.equal("", R.status(ws))
      fsck_clean(ws)
    end)
  end)
end
