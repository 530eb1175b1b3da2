-- Git-aware sync end to end through ferry.prepare and ferry.restore, on repositories made by the specs, in
-- real sandboxes (local and bwrap): the tree as git shows it plus a shallow history, the agent's commits
-- back as commits (a fast-forward, or a ferry/ branch when the user's branch moved), the 3-way file merge
-- for what is not committed, a delta re-sync of one new commit, and .git never written as files.
local core = require "ferry.core"
local ferry = require "ferry"
local git_restore = require "ferry.git_restore"
local helpers = require "support.helpers"
local R = require "support.git_repos"

local function pick(t, keys)
  local out = {}
  for _, k in ipairs(keys) do out[k] = t[k] end
  return out
end

for _, label in ipairs { "local", "bwrap" } do
  describe("git-aware prepare and restore (" .. label .. ")", function()
    local fx, box, repo, ws, rd, state, in_sandbox

    local function prepare(opts)
      opts = opts or {}
      opts.provider, opts.workspace, opts.remote_dir, opts.state = box.provider, ws, rd, state
      local r, err, code = ferry.prepare(opts)
      assert(r, tostring(err) .. " " .. tostring(code))
      return r
    end

    local function restore(opts)
      opts = opts or {}
      opts.state = state
      local r, err, code = ferry.restore(opts)
      assert(r, tostring(err) .. " " .. tostring(code))
      return r
    end

    before_each(function()
      fx = R.fixture(label, { commits = 30 })
      box, repo, ws, rd, state, in_sandbox = fx.box, fx.repo, fx.ws, fx.rd, fx.state, fx.run
    end)

    after_each(function() fx.cleanup() end)

    it("sends the tree as git shows it with D commits in one command; two agent commits fast-forward the branch",
      function()
        R.dirty(ws)
        R.git(ws, { "branch", "-q", "other", "HEAD~3" })
        local r = prepare { git_depth = 5 }
        assert.same({ mode = "history", pack = "full", commits = 5, depth = 5, head = repo.head,
          ref = "refs/heads/feature", branch = "feature" },
          pick(r.git, { "mode", "pack", "commits", "depth", "head", "ref", "branch" }))
        assert.equal(1, r.commands)
        assert.same({}, r.warnings)
        -- history, branch and the host's status (staged, unstaged, intent-to-add, renames, untracked)
        assert.equal("5\n", in_sandbox("git rev-list --count HEAD"))
        assert.equal("refs/heads/feature\n", in_sandbox("git symbolic-ref HEAD"))
        -- only the checked-out branch travels, no tag, no remote
        assert.equal("refs/heads/feature\n", in_sandbox("git for-each-ref --format='%(refname)'"))
        assert.equal("true\n", in_sandbox("git rev-parse --is-shallow-repository"))
        assert.equal(R.status(ws), in_sandbox("git status --porcelain=v1 --untracked-files=all"))
        -- ignored files stay home; untracked ones travel; .git is the sandbox's own, not a copy
        for _, rel in ipairs { "debug.log", "node_modules", "ignored-dir" } do
          assert.is_nil(core.fs_lstat(box.host_root .. "/" .. rel), rel)
        end
        assert.equal("notes\n", helpers.read_file(box.host_root .. "/notes.txt"))

        local edited = R.path_of(9)
        in_sandbox("git add -A && git commit -q -m 'agent: take the WIP' && echo new > agent.txt && "
          .. "git add agent.txt && git commit -q -m 'agent: add agent.txt' && echo more >> " .. edited
          .. " && echo built > build.log")
        local sandbox_head = in_sandbox("git rev-parse HEAD"):match("%x+")
        local back = restore()
        assert.same({ mode = "fast-forward", ref = "refs/heads/feature", old = repo.head, new = sandbox_head,
          commits = 2, branch = "feature" }, back.git)
        assert.equal(1, back.commands)
        assert.same({ "build.log" }, back.ignored)
        assert.equal("agent: add agent.txt\nagent: take the WIP\ncommit 30\n",
          R.git(ws, { "log", "-3", "--format=%s" }))
        assert.equal(sandbox_head, R.head(ws))
        R.fsck_clean(ws)
        -- git status shows only the real change: the agent's uncommitted edit (and the host's ignored files)
        assert.equal(" M " .. edited .. "\n", R.status(ws))
        assert.equal(in_sandbox("git ls-files -s"), R.git(ws, { "ls-files", "-s" }))
        assert.is_nil(core.fs_lstat(ws .. "/build.log"))
        assert.equal("log\n", helpers.read_file(ws .. "/debug.log"))
        assert.equal(sandbox_head .. " refs/heads/feature\n" .. R.line(ws, { "rev-parse", "HEAD~5" })
          .. " refs/heads/other\n", R.refs(ws))

        -- the next round builds on the new head
        in_sandbox("echo three > three.txt && git add three.txt && git commit -q -m 'agent three'")
        back = restore()
        assert.equal("fast-forward", back.git.mode)
        assert.equal(sandbox_head, back.git.old)
        assert.equal(1, back.git.commits)
        assert.equal("agent three\n", R.git(ws, { "log", "-1", "--format=%s" }))
        assert.equal(" M " .. edited .. "\n", R.status(ws))
      end)

    it("keeps the agent's commits on ferry/<branch> when the user committed meanwhile; only the uncommitted "
      .. "changes reach the working tree", function()
      prepare()
      in_sandbox("echo one > a1.txt && git add a1.txt && git commit -q -m 'agent one' && echo edit >> "
        .. R.path_of(1))
      local agent_head = in_sandbox("git rev-parse HEAD"):match("%x+")
      local user = R.commit(ws, { ["user.txt"] = "user\n" }, "user meanwhile")
      local back = restore()
      assert.same({ mode = "ferry-ref", ref = "refs/heads/ferry/feature", new = agent_head, commits = 1,
        branch = "feature" }, back.git)
      assert.equal(user, R.line(ws, { "rev-parse", "refs/heads/feature" }))
      assert.equal(user, R.head(ws))
      assert.equal("agent one\ncommit 30\n", R.git(ws, { "log", "-2", "--format=%s", "ferry/feature" }))
      R.fsck_clean(ws)
      -- the committed file waits on the ref; the uncommitted edit is in the working tree
      assert.is_nil(core.fs_lstat(ws .. "/a1.txt"))
      assert.equal(" M " .. R.path_of(1) .. "\n", R.status(ws))
      assert.same({ R.path_of(1) }, back.changed)
      -- the user merges the ref with git, cleanly
      R.git(ws, { "merge", "-q", "--no-edit", "ferry/feature" })
      assert.equal("one\n", helpers.read_file(ws .. "/a1.txt"))
    end)

    it("merges the sandbox's uncommitted changes with the 3-way merge, conflicts included", function()
      prepare()
      local both, theirs = R.path_of(2), R.path_of(3)
      helpers.write_file(ws .. "/" .. both, "host edit\n")
      in_sandbox("echo sandbox edit > " .. both .. " && echo theirs >> " .. theirs)
      local back = restore()
      assert.same({ mode = "none", ref = "refs/heads/feature", old = repo.head, new = repo.head, commits = 0,
        branch = "feature" }, back.git)
      assert.same({ both }, back.conflicts)
      assert.equal("host edit\n", helpers.read_file(ws .. "/" .. both))
      assert.equal("sandbox edit\n", helpers.read_file(ws .. "/" .. both .. ".ferry-remote"))
      assert.same({ theirs }, back.changed)
      assert.equal(" M " .. both .. "\n M " .. theirs .. "\n?? " .. both .. ".ferry-remote\n", R.status(ws))
      assert.equal(repo.head, R.head(ws))
    end)

    it("re-syncs a new host commit as a thin bundle of that commit and the changed file only", function()
      local first = prepare()
      assert.equal("full", first.git.pack)
      local head = R.commit(ws, { [R.path_of(4)] = "changed on the host\n" }, "host one")
      local again = prepare()
      assert.is_true(again.delta)
      assert.equal(1, again.delta_files)
      assert.same({ mode = "history", pack = "thin", commits = 1, head = head },
        pick(again.git, { "mode", "pack", "commits", "head" }))
      assert.is_true(again.git.bytes < 2000, tostring(again.git.bytes))
      assert.is_true(again.bytes_sent < first.bytes_sent / 4)
      assert.equal(2, again.commands)
      assert.equal(head .. "\n", in_sandbox("git rev-parse HEAD"))
      assert.equal("", in_sandbox("git status --porcelain=v1 --untracked-files=all"))
      assert.equal("host one\n", in_sandbox("git log -1 --format=%s"))
      -- nothing new: the history is the same
      local same = prepare()
      assert.equal("same", same.git.pack)
      assert.equal(0, same.delta_files)
      -- the sandbox lost its repository: the delta says so, and one more command sends the history in full
      in_sandbox("rm -rf .git")
      head = R.commit(ws, { [R.path_of(5)] = "again\n" }, "host two")
      local full = prepare()
      assert.same({ pack = "full", commits = 10, head = head }, pick(full.git, { "pack", "commits", "head" }))
      assert.equal(3, full.commands)
      assert.equal("10\n", in_sandbox("git rev-list --count HEAD"))
      assert.equal("", in_sandbox("git status --porcelain=v1 --untracked-files=all"))
    end)

    it("never sends or restores .git as files, and the merge writes nothing inside .git", function()
      R.sh(ws, "mkdir -p vendored && git -C vendored init -q && echo v > vendored/v.txt")
      local r = prepare()
      assert.is_nil(core.fs_lstat(box.host_root .. "/vendored/.git"))
      assert.equal("v\n", helpers.read_file(box.host_root .. "/vendored/v.txt"))
      assert.equal("history", r.git.mode)
      local before = R.sh(ws, "find .git -type f | sort")
      local vendored_head = helpers.read_file(ws .. "/vendored/.git/HEAD")
      in_sandbox("mkdir -p .git/hooks && echo evil > .git/hooks/post-checkout && mkdir -p sub/.git && "
        .. "echo '[core]' > sub/.git/config && echo fine > sub/file.txt && mkdir -p vendored/.git && "
        .. "echo x > vendored/.git/HEAD")
      local back = restore()
      assert.equal("none", back.git.mode)
      assert.same({ "sub", "sub/file.txt" }, back.changed)
      assert.is_nil(core.fs_lstat(ws .. "/.git/hooks/post-checkout"))
      assert.is_nil(core.fs_lstat(ws .. "/sub/.git"))
      assert.equal(vendored_head, helpers.read_file(ws .. "/vendored/.git/HEAD"))
      assert.equal(before, R.sh(ws, "find .git -type f | sort"))
      assert.has_error(function()
        git_restore.assert_outside_git { actions = { { op = "write", path = "a/.git/config" } } }
      end, "restore: the file merge planned to write a/.git/config, inside .git; nothing written there")
    end)

    it("finishes the fast-forward when a restore stopped after the branch moved is run again", function()
      prepare()
      in_sandbox("echo one > one.txt && git add one.txt && git commit -qm one && echo two >> " .. R.path_of(5)
        .. " && git commit -qam two")
      local new = in_sandbox("git rev-parse HEAD"):match("%x+")
      assert.has_error(function()
        restore { before_write = function() error("stopped", 0) end }
      end, "stopped")
      assert.equal(new, R.head(ws)) -- the branch moved before the files were written
      local back = restore()
      assert.same({ mode = "fast-forward", ref = "refs/heads/feature", old = repo.head, new = new, commits = 2,
        branch = "feature" }, back.git)
      assert.equal("", R.status(ws))
      assert.equal("one\n", helpers.read_file(ws .. "/one.txt"))
      assert.equal("none", restore().git.mode)
    end)

    it("fetches a full bundle when the host lost the commit it sent (one more command)", function()
      prepare()
      in_sandbox("echo one > one.txt && git add one.txt && git commit -qm 'agent one'")
      R.sh(ws, "git reset -q --hard HEAD~1 && git reflog expire --expire=now --all && git gc -q --prune=now")
      assert.is_false(R.has(ws, repo.head))
      local back = restore()
      assert.equal(2, back.commands)
      assert.equal("ferry-ref", back.git.mode)
      assert.equal("agent one\ncommit 30\n", R.git(ws, { "log", "-2", "--format=%s", "ferry/feature" }))
      R.fsck_clean(ws)
      assert.is_nil(core.fs_lstat(ws .. "/one.txt")) -- committed: it waits on the ferry branch
    end)

    it("--no-git (git = false) sends .git as plain files, as before git mode", function()
      local r = prepare { git = false }
      assert.is_nil(r.git)
      assert.truthy(core.fs_lstat(box.host_root .. "/.git/index"))
      assert.equal(R.count(ws) .. "\n", in_sandbox("git rev-list --count HEAD"))
    end)
  end)
end
