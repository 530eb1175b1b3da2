-- Git-aware sync from the command line (build/ferry prepare / restore), on the local and bwrap providers:
-- what the summaries say, the --json result's git field, exit 3 when the commits went to a ferry/ branch,
-- --git-depth, --no-git, --inbound adopt, --reference, and the usage errors of those flags.
local cjson = require "cjson"
local core = require "ferry.core"
local ferry = require "ferry"
local helpers = require "support.helpers"
local R = require "support.git_repos"

local function run_ferry(args)
  local argv = { helpers.ferry_bin }
  table.move(args, 1, #args, 2, argv)
  return assert(ferry.proc.run { argv = argv, timeout_ms = 60000, env = R.ENV })
end

local function last_json(stdout)
  local last
  for line in stdout:gmatch("[^\n]+") do last = line end
  return cjson.decode(last)
end

for _, label in ipairs { "local", "bwrap" } do
  describe("ferry prepare/restore in git mode (" .. label .. ")", function()
    local fx, box, repo, ws, state, in_sandbox

    local function prepare(...)
      local args = { "prepare", "-p", box.provider, "-w", ws, "-r", box.root, "--state", state, ... }
      return run_ferry(args)
    end

    before_each(function()
      fx = R.fixture(label, { commits = 12 })
      box, repo, ws, state, in_sandbox = fx.box, fx.repo, fx.ws, fx.state, fx.run
    end)

    after_each(function() fx.cleanup() end)

    it("fast-forwards (exit 0), then keeps commits on ferry/<branch> when the branch moved (exit 3)", function()
      local res = prepare("--git-depth", "3")
      assert.equal(0, res.code, res.stderr)
      assert.matches("\n  git       feature: 3 commits of history %(full, [%d.]+ [KMG]?i?B%)\n", res.stdout)
      assert.equal("3\n", in_sandbox("git rev-list --count HEAD"))
      in_sandbox("echo one > one.txt && git add one.txt && git commit -qm one && echo two > two.txt && "
        .. "git add two.txt && git commit -qm two")
      res = run_ferry { "restore", "--state", state }
      assert.equal(0, res.code, res.stderr)
      assert.truthy(res.stdout:find("\n  git      2 commits fast-forwarded onto feature\n", 1, true), res.stdout)
      assert.equal("two\none\n", R.git(ws, { "log", "-2", "--format=%s" }))
      assert.equal("", R.status(ws))

      in_sandbox("echo three > three.txt && git add three.txt && git commit -qm three")
      R.commit(ws, { ["user.txt"] = "user\n" }, "user meanwhile")
      res = run_ferry { "restore", "--state", state }
      assert.equal(3, res.code, res.stderr)
      assert.matches("\n  git      branch feature moved on the host: 1 commit kept on ferry/feature\n", res.stdout)
      in_sandbox("echo four > four.txt && git add four.txt && git commit -qm four")
      res = run_ferry { "restore", "--state", state, "--json" }
      assert.equal(3, res.code, res.stderr)
      local obj = last_json(res.stdout)
      -- the ferry branch moves on from where the last restore left it: one more commit
      assert.same({ mode = "ferry-ref", ref = "refs/heads/ferry/feature", old = obj.git.old, new = obj.git.new,
        commits = 1, branch = "feature" }, obj.git)
      assert.equal(obj.git.old, R.line(ws, { "rev-parse", "ferry/feature~1" }))
      assert.equal(obj.git.new, R.line(ws, { "rev-parse", "ferry/feature" }))
      assert.equal("four\nthree\n", R.git(ws, { "log", "-2", "--format=%s", "ferry/feature" }))
      assert.equal("user meanwhile\n", R.git(ws, { "log", "-1", "--format=%s", "feature" }))
    end)

    it("--no-git sends .git as files; --inbound adopt sends nothing; --reference stages a read-only dir", function()
      local res = prepare("--no-git", "--json")
      assert.equal(0, res.code, res.stderr)
      assert.is_nil(last_json(res.stdout).git)
      assert.truthy(core.fs_lstat(box.host_root .. "/.git/index"))

      local lib = box.tmp .. "/lib"
      R.sh(box.tmp, "mkdir -p lib && echo doc > lib/doc.md")
      res = prepare("--inbound", "adopt", "--reference", "lib=" .. lib, "--reference", "gone=/nonexistent/x")
      assert.equal(0, res.code, res.stderr)
      assert.matches("\n  git       adopted feature at " .. repo.head .. "\n", res.stdout)
      assert.matches("\n  reference lib %-> " .. box.root:gsub("%p", "%%%0") .. "/%.ferry%-runtime/references/lib "
        .. "%(read%-only%)\n", res.stdout)
      assert.matches("ferry: warning: reference gone: /nonexistent/x: lstat /nonexistent: No such file or directory; "
        .. "not staged\n", res.stderr)
      assert.equal("doc\n", helpers.read_file(box.host_root .. "/.ferry-runtime/references/lib/doc.md"))
    end)

    it("--many: a restore whose commits went to a ferry/ branch makes the run exit 3", function()
      local many = box.tmp .. "/many.json"
      helpers.write_file(many, cjson.encode { { provider = box.provider, workspace = ws, remote_dir = box.root,
        state = state } })
      local res = run_ferry { "prepare", "--many", many, "--git-depth", "2" }
      assert.equal(0, res.code, res.stdout .. res.stderr)
      assert.equal("2\n", in_sandbox("git rev-list --count HEAD"))
      in_sandbox("echo a > a.txt && git add a.txt && git commit -qm a")
      R.commit(ws, { ["user.txt"] = "user\n" }, "user meanwhile")
      res = run_ferry { "restore", "--many", many }
      assert.equal(3, res.code, res.stdout .. res.stderr)
      assert.truthy(res.stdout:find(", branch feature moved on the host: 1 commit kept on ferry/feature\n", 1, true),
        res.stdout)
    end)

    it("rejects bad values of the git flags", function()
      for _, case in ipairs {
        { { "--git-depth", "x" }, "--git-depth expects an integer >= 0, got 'x'" },
        { { "--inbound", "move" }, "--inbound expects copy or adopt, got 'move'" },
        { { "--reference", "nodir" }, "--reference expects NAME=DIR, got 'nodir'" },
      } do
        local res = prepare(table.unpack(case[1]))
        assert.equal(2, res.code)
        assert.matches(case[2]:gsub("%p", "%%%0"), res.stderr)
      end
    end)
  end)
end
