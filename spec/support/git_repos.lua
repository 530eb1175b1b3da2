--- Git repositories made by the specs: a history made with `git fast-import` (any length, in one process),
-- a dirty work tree covering every kind of change (staged, unstaged, both, renamed, deleted, intent-to-add,
-- chmod, untracked, ignored), and helpers to run git and compare what it shows.
local core = require "ferry.core"
local helpers = require "support.helpers"
local proc = require "ferry.proc"

local M = {}

M.NAME, M.EMAIL = "Host User", "host@example.com"
M.BRANCH = "feature"

-- Commits made by the specs do not depend on the machine's git configuration or locale.
M.ENV = {
  GIT_CONFIG_NOSYSTEM = "1", GIT_CONFIG_GLOBAL = "/dev/null", LC_ALL = "C", GIT_TERMINAL_PROMPT = "0",
  GIT_AUTHOR_NAME = false, GIT_AUTHOR_EMAIL = false, GIT_COMMITTER_NAME = false, GIT_COMMITTER_EMAIL = false,
  GIT_DIR = false, GIT_WORK_TREE = false, GIT_INDEX_FILE = false,
}

--- Run git in `dir`; returns the ferry.proc result (any exit code). opts: stdin, env.
function M.try(dir, args, opts)
  opts = opts or {}
  local argv = { "git", "-C", dir }
  table.move(args, 1, #args, 4, argv)
  local env = {}
  for k, v in pairs(M.ENV) do env[k] = v end
  for k, v in pairs(opts.env or {}) do env[k] = v end
  return assert(proc.run { argv = argv, env = env, stdin = opts.stdin, max_output = 256 * 1024 * 1024 })
end

--- Run git in `dir`, asserting it succeeds; returns its stdout.
function M.git(dir, args, opts)
  local res = M.try(dir, args, opts)
  assert(res.code == 0, "git " .. table.concat(args, " ") .. " in " .. dir .. " failed: " .. res.stderr)
  return res.stdout
end

--- Run a shell script in `dir` with the specs' git environment; asserts it succeeds; returns its stdout.
function M.sh(dir, script, env)
  local e = {}
  for k, v in pairs(M.ENV) do e[k] = v end
  for k, v in pairs(env or {}) do e[k] = v end
  local res = assert(proc.run { argv = { "sh", "-c", script }, cwd = dir, env = e, max_output = 64 * 1024 * 1024 })
  assert(res.code == 0, "script failed in " .. dir .. ": " .. script .. "\n" .. res.stderr)
  return res.stdout
end

--- The first line of git's output.
function M.line(dir, args)
  return (M.git(dir, args):match("^([^\n]*)"))
end

function M.head(dir)
  return M.line(dir, { "rev-parse", "HEAD" })
end

--- `git status --porcelain=v1` (renames shown) of a work tree.
function M.status(dir)
  return M.git(dir, { "status", "--porcelain=v1", "--untracked-files=all" })
end

--- Number of commits reachable from `rev` (default HEAD).
function M.count(dir, rev)
  return tonumber(M.git(dir, { "rev-list", "--count", rev or "HEAD" }):match("%d+"))
end

--- The refs of a repository, "oid ref" lines.
function M.refs(dir)
  return M.git(dir, { "for-each-ref", "--format=%(objectname) %(refname)" })
end

--- True when `dir` holds object `oid`.
function M.has(dir, oid)
  return M.try(dir, { "cat-file", "-e", oid }).code == 0
end

local function file_content(f, version)
  local lines = {}
  for i = 1, 40 do lines[i] = string.format("file %d line %d version %d", f, i, version) end
  return table.concat(lines, "\n") .. "\n"
end

--- The path of file number f (0-based) of a repository of `files` files.
function M.path_of(f)
  return string.format("src/mod%d/file%d.txt", f // 50, f)
end

local function data(text)
  return "data " .. #text .. "\n" .. text .. "\n"
end

-- A fast-import stream: commit 1 adds every file and .gitignore, commit i > 1 rewrites one file.
local function history_stream(commits, files, branch, content)
  local parts, versions = {}, {}
  local t0 = 1700000000
  for i = 1, commits do
    parts[#parts + 1] = string.format("commit refs/heads/%s\nmark :%d\ncommitter %s <%s> %d +0000\n", branch, i,
      M.NAME, M.EMAIL, t0 + i * 60)
    parts[#parts + 1] = data("commit " .. i)
    if i > 1 then parts[#parts + 1] = string.format("from :%d\n", i - 1) end
    if i == 1 then
      parts[#parts + 1] = "M 100644 inline .gitignore\n" .. data("*.log\nnode_modules/\nignored-dir/\n")
      for f = 0, files - 1 do
        versions[f] = 1
        parts[#parts + 1] = "M 100644 inline " .. M.path_of(f) .. "\n" .. data(content(f, 1))
      end
    else
      local f = (i * 7) % files
      versions[f] = versions[f] + 1
      parts[#parts + 1] = "M 100644 inline " .. M.path_of(f) .. "\n" .. data(content(f, versions[f]))
    end
  end
  return table.concat(parts)
end

--- A new repository with a linear history. opts: commits (default 12), files (default 20), branch (default
--- "feature"), dir (default a fresh temp dir's "ws"), content(f, version) -> text. Returns {dir, branch,
--- head, tmp (the temp dir to remove)}.
function M.make(opts)
  opts = opts or {}
  local tmp = opts.dir and nil or helpers.tmpdir()
  local dir = opts.dir or (tmp .. "/ws")
  local branch = opts.branch or M.BRANCH
  helpers.sh("mkdir -p " .. core.sh_quote(dir))
  M.git(dir, { "init", "-q", "-b", branch })
  M.git(dir, { "config", "user.name", M.NAME })
  M.git(dir, { "config", "user.email", M.EMAIL })
  M.git(dir, { "fast-import", "--quiet" },
    { stdin = history_stream(opts.commits or 12, opts.files or 20, branch, opts.content or file_content) })
  M.git(dir, { "reset", "-q", "--hard" })
  return { dir = dir, branch = branch, head = M.head(dir), tmp = tmp }
end

--- Commit `files` ({path = content}) on the checked-out branch; returns the new HEAD.
function M.commit(dir, files, message)
  for path, content in pairs(files) do
    local d = path:match("^(.*)/[^/]*$")
    if d then helpers.sh("mkdir -p " .. core.sh_quote(dir .. "/" .. d)) end
    helpers.write_file(dir .. "/" .. path, content)
    M.git(dir, { "add", "--", path })
  end
  M.git(dir, { "commit", "-q", "-m", message or "a commit" })
  return M.head(dir)
end

--- Every kind of work-tree change on a repository made by M.make (20 files or more):
--- ` M` unstaged edit, `M ` staged edit, `MM` both, `A ` staged new file, ` D` deleted, `D ` + `??` staged
--- deletion kept on disk, `R ` staged rename, ` M` chmod +x, ` A` intent-to-add, `??` untracked file and
--- dir, and ignored files (`*.log`, node_modules/, ignored-dir/) that must stay home.
function M.dirty(dir)
  local p = M.path_of
  M.sh(dir, table.concat({
    "echo unstaged >> " .. p(1),
    "echo staged >> " .. p(2) .. " && git add " .. p(2),
    "rm " .. p(3),
    "git rm -q --cached " .. p(4),
    "echo staged >> " .. p(5) .. " && git add " .. p(5) .. " && echo unstaged >> " .. p(5),
    "git mv " .. p(6) .. " src/renamed.txt",
    "chmod +x " .. p(7),
    "echo new > src/new-staged.txt && git add src/new-staged.txt",
    "echo intent > intent.txt && git add -N intent.txt",
    "echo notes > notes.txt",
    "mkdir -p scratch && echo a > scratch/a.txt",
    "echo log > debug.log && mkdir -p node_modules/pkg && echo x > node_modules/pkg/i.js",
    "mkdir -p ignored-dir && echo y > ignored-dir/y.txt",
  }, " && "))
end

--- Run `script` in the sandbox `sb`, in `dir`; returns its stdout (asserting exit 0).
function M.in_sandbox(sb, dir, script)
  local res = assert(sb:exec("cd " .. core.sh_quote(dir) .. " && " .. script))
  assert(res.code == 0, script .. ": " .. tostring(res.stderr))
  return res.stdout
end

--- Assert that `git fsck` finds nothing wrong in the repository at `dir`.
function M.fsck_clean(dir)
  local res = M.try(dir, { "fsck", "--no-progress", "--no-dangling" })
  assert(res.code == 0 and res.stdout == "", "git fsck in " .. dir .. ": " .. res.stdout .. res.stderr)
end

--- A spec's fixture: a repository made by M.make(opts) and a fresh sandbox of kind `label`
--- (support.sandboxes). Fields: box, sb (opened), repo, ws (the repository's dir), rd (the sandbox's remote
--- dir), state (a state file path); run(script) runs in rd in the sandbox; cleanup() undoes it all.
function M.fixture(label, opts)
  local box = require("support.sandboxes").make(label)
  local f = { box = box, sb = box:open(), repo = M.make(opts) }
  f.ws, f.rd, f.state = f.repo.dir, box.root, box.tmp .. "/state.json"
  function f.run(script) return M.in_sandbox(f.sb, f.rd, script) end
  function f.cleanup()
    f.sb:close()
    box:cleanup()
    helpers.rmtree(f.repo.tmp)
  end
  return f
end

--- A directory of symlinks to every program on PATH but git: `cmd:env PATH=<it>` is a sandbox without git.
function M.path_without_git()
  if M.nogit_dir then return M.nogit_dir end
  local dir = helpers.tmpdir()
  helpers.sh("for d in /usr/local/bin /usr/bin /bin; do for f in \"$d\"/*; do n=${f##*/}; case $n in git|git-*) "
    .. "continue ;; esac; [ -e " .. dir .. "/\"$n\" ] || ln -s \"$f\" " .. dir .. "/\"$n\"; done; done")
  M.nogit_dir = dir
  return dir
end

return M
