--- The verbs that manage an agent's runtime in a sandbox (README "Sandbox verbs"): prepare and restore, for one
--- sandbox or, with --many, several.
local registry = require "ferry.cli.registry"
local options = require "ferry.cli.options"
local report = require "ferry.cli.report"
local many = require "ferry.cli.many"
local git_lines = require "ferry.cli.git_lines"

local define, usage = registry.define, registry.usage
local M = {}

local function parse_assets(list)
  local assets, err = options.key_values(list, "^([%w_%-%.]+)=(.+)$", "--asset", "KEY=DIR")
  if err then usage(err) end
  return assets
end

-- The git and inbound options of prepare, as ferry.prepare's fields (usage errors for bad values).
local function git_options(o)
  local refs, err = options.key_values(o.reference, "^([%w_%-%.]+)=(.+)$", "--reference", "NAME=DIR")
  if err then usage(err) end
  local depth
  if o.git_depth then
    depth = o.git_depth:match("^%d+$") and math.tointeger(tonumber(o.git_depth))
    if not depth then usage("--git-depth expects an integer >= 0, got '" .. o.git_depth .. "'") end
  end
  if o.inbound and o.inbound ~= "copy" and o.inbound ~= "adopt" then
    usage("--inbound expects copy or adopt, got '" .. o.inbound .. "'")
  end
  return { git = git_lines.git_option(o), git_depth = depth, inbound = o.inbound, references = refs }
end

local function prepare_opts(base, o)
  local g = git_options(o)
  base.git, base.git_depth, base.inbound, base.references = g.git, g.git_depth, g.inbound, g.references
  base.session = options.session(o)
  return base
end

local function human_prepare(r)
  report.human_prepare(r)
  git_lines.prepare(r)
end

local function human_restore(r)
  report.human_restore(r)
  git_lines.restore(r)
end

---------------------------------------------------------------------------------------------------------------
-- prepare

-- One item of prepare --many: its result object, or {error, code}.
local function prepare_item(item, o)
  local r, err, code = require("ferry").prepare(prepare_opts({
    provider = item.provider, adapter = item.adapter, workspace = item.workspace, remote_dir = item.remote_dir,
    state = item.state, excludes = o.exclude, assets = parse_assets(o.asset),
    secrets = options.secret_values(o.secret_env),
  }, o))
  if not r then return { error = err, code = code } end
  local obj = report.result_object("prepare", r)
  obj.provider = item.provider
  return obj
end

define("prepare", [[
usage: ferry prepare -p PROVIDER [-a ADAPTER] -w WORKSPACE [-r REMOTE_DIR] [--exclude PAT]... [--asset KEY=DIR]...
                     [--state FILE] [--json] [-v] [--secret-env NAME]... [--no-git] [--git-depth N]
                     [--inbound copy|adopt] [--reference NAME=DIR]... [--no-session]
       ferry prepare --many FILE [--jobs N] [the options above but -p, -w, -r, -a, --state]
Prepare a managed runtime in the sandbox: install the adapter's agent CLI unless it is already there, copy
the workspace in (minus excludes), copy the assets to REMOTE_DIR/.ferry-runtime/ADAPTER/KEY, and write the
state file that `ferry restore` needs. A workspace at the top of a git work tree goes in git mode: the files
git shows (tracked, and untracked but not ignored), the last N commits as a repository with the current
branch, the index as on the host; .git itself never travels as files.
  -p, --provider PROVIDER  local, bwrap:DIR, cmd:ARGV... (see ferry providers)
  -a, --adapter ADAPTER    the agent's policy (see ferry adapters); default shell
  -w, --workspace DIR      the host workspace to copy in
  -r, --remote-dir DIR     where it goes in the sandbox (default: the provider's, e.g. /sandbox/workspace)
  --exclude PAT            also leave out PAT (repeatable): a bare name matches at any depth, a leading /
                           anchors at the workspace root, * and ? within a name, ** any number of dirs,
                           a trailing / matches directories only
  --asset KEY=DIR          copy DIR to the runtime dir under KEY (repeatable)
  --state FILE             where to write the state (default: $XDG_STATE_HOME/ferry/<hash>.json)
  --json                   progress events as JSON lines on stdout; the result object is the last line
  -v, --verbose            also show the adapter's info and debug messages on stderr (warnings always show)
  --secret-env NAME        replace the value of env NAME by *** everywhere (repeatable)
  --many FILE              prepare several sandboxes from FILE, a JSON list of objects
                           {"provider", "workspace", "state", "adapter" (optional), "remote_dir" (optional)},
                           all on one loop; one failure does not stop the others. A line per sandbox as it
                           finishes: ok|FAILED WORKSPACE -> PROVIDER:REMOTE_DIR (BYTES, MS ms); with --json one
                           object per sandbox, then {"event":"result","ok":...,"results":[...]}
  --jobs N                 with --many: at most N sandboxes at a time (default 8)
  --no-git                 no git mode: a git workspace's .git travels as plain files (as before git mode)
  --git-depth N            commits of history to send in git mode (default 10; 0 for the whole history)
  --inbound MODE           copy (default): send the workspace; adopt: take the workspace already in
                           REMOTE_DIR (a durable volume, an earlier run) as the baseline without sending it
  --reference NAME=DIR     stage DIR read-only at REMOTE_DIR/.ferry-runtime/references/NAME for the agent to
                           consult (repeatable); never restored; one that cannot be staged is a warning
]] .. options.NO_SESSION_HELP .. [[
Exit: 0 ok, 1 failed (with --many: any failed), 2 usage (with --many: a bad FILE, naming the item, from 1).
]], {
  options = { options.PROVIDER, options.SECRET_ENV, options.JSON, options.VERBOSE, options.MANY, options.JOBS,
    options.NO_GIT, options.NO_SESSION,
    { names = { "--git-depth" }, key = "git_depth", value = "N" },
    { names = { "--inbound" }, key = "inbound", value = "MODE" },
    { names = { "--reference" }, key = "reference", value = "NAME=DIR", multi = true },
    { names = { "-a", "--adapter" }, key = "adapter", value = "ADAPTER" },
    { names = { "-w", "--workspace" }, key = "workspace", value = "DIR" },
    { names = { "-r", "--remote-dir" }, key = "remote_dir", value = "DIR" },
    { names = { "--exclude" }, key = "exclude", value = "PAT", multi = true },
    { names = { "--asset" }, key = "asset", value = "KEY=DIR", multi = true },
    { names = { "--state" }, key = "state", value = "FILE" },
  },
  secrets = true, max_args = 0,
}, function(o)
  local items, jobs = many.items("prepare", o, { { "provider", "-p" }, { "workspace", "-w" },
    { "remote_dir", "-r" }, { "adapter", "-a" }, { "state", "--state" } })
  if items then
    parse_assets(o.asset)
    git_options(o)
    return many.run("prepare", o, items, jobs, function(item) return prepare_item(item, o) end)
  end
  if not o.provider then usage("missing -p PROVIDER") end
  if not o.workspace then usage("missing -w WORKSPACE") end
  local assets = parse_assets(o.asset)
  local base = prepare_opts({
    provider = o.provider, adapter = o.adapter, workspace = o.workspace, remote_dir = o.remote_dir,
    excludes = o.exclude, assets = assets, state = o.state, secrets = options.secret_values(o.secret_env),
  }, o)
  local p = report.progress_for(o)
  base.progress = p
  local r, err, code = require("ferry").prepare(base)
  if not r then report.failure(o, p, "prepare", err, code) end
  local obj = report.result_object("prepare", r)
  obj.provider, obj.workspace = o.provider, obj.workspace or o.workspace
  report.success(o, p, obj, human_prepare)
end)

---------------------------------------------------------------------------------------------------------------
-- restore

-- One item of restore --many: its result object, or {error, code, refused}.
local function restore_item(item, o, max_bytes)
  local r, err, code, partial = require("ferry").restore {
    state = item.state, max_bytes = max_bytes, allow_outside_symlinks = o.allow_outside_symlinks,
    secrets = options.secret_values(o.secret_env), git = git_lines.git_option(o),
    credentials = o.copy_back_credentials and "copy-back" or nil, session = options.session(o),
  }
  if not r then
    return { error = err, code = code, refused = partial and report.list_or_empty(partial.refused) or {} }
  end
  return report.result_object("restore", r, require("ferry.state").read(r.state or item.state))
end

define("restore", [[
usage: ferry restore --state FILE [--json] [-v] [--secret-env NAME]... [--allow-outside-symlinks] [--max-bytes N]
                     [--copy-back-credentials] [--no-git] [--no-session]
       ferry restore --many FILE [--jobs N] [the options above but --state]
Bring the sandbox's workspace back (state FILE from `ferry prepare`) and merge it into the host workspace
against the baseline taken at prepare: the sandbox's changes are taken, edits made on the host meanwhile are
kept, and a file changed on both sides keeps the host version with the sandbox's beside it as
PATH.ferry-remote (a conflict). An entry that would write outside the workspace (absolute, .., through a
symlink), a link, device or fifo is refused and nothing is written. After a prepare in git mode the agent's
commits come back as commits (a bundle, verified before anything is imported): the branch is fast-forwarded
when it has not moved on the host, else they are kept on ferry/BRANCH (exit 3) and the branch is left alone.
  --state FILE               the state file written by ferry prepare
  --json                     progress events as JSON lines on stdout; the result object is the last line
  -v, --verbose              also show the adapter's info and debug messages on stderr (warnings always show)
  --secret-env NAME          replace the value of env NAME by *** everywhere (repeatable)
  --allow-outside-symlinks   accept symlinks whose target is outside the workspace
  --max-bytes N              refuse an archive over N bytes of content (K, M, G suffixes; default 1G)
  --copy-back-credentials    let the adapter copy a credential the sandbox refreshed back to the host (codex:
                             auth.json, only a newer refresh of the same account, the old file kept as a
                             backup); off by default: the summary says what was not copied
  --many FILE                restore several sandboxes from FILE, a JSON list of objects with a "state" field
                             (the FILE given to prepare --many does), all on one loop; one failure does not stop
                             the others. A line per sandbox: ok|FAILED STATE -> PROVIDER:REMOTE_DIR (BYTES, MS ms);
                             with --json one object per sandbox, then {"event":"result","ok":...,"results":[...]}
  --jobs N                   with --many: at most N sandboxes at a time (default 8)
  --no-git                   bring back files only (no commits), even after a prepare in git mode
]] .. options.NO_SESSION_HELP .. [[
Exit: 0 ok, 1 failed (or refused; with --many: any), 2 usage (or a bad --many FILE), 3 finished with conflicts
or with the commits kept on a ferry/ branch (with --many: none failed, some had either).
]], {
  options = { options.SECRET_ENV, options.JSON, options.VERBOSE, options.MAX_BYTES, options.MANY, options.JOBS,
    options.NO_GIT, options.NO_SESSION,
    { names = { "--state" }, key = "state", value = "FILE" },
    { names = { "--allow-outside-symlinks" }, key = "allow_outside_symlinks" },
    { names = { "--copy-back-credentials" }, key = "copy_back_credentials" },
  },
  secrets = true, max_args = 0,
}, function(o)
  local items, jobs = many.items("restore", o, { { "state", "--state" } })
  if not items and not o.state then usage("missing --state FILE") end
  local max_bytes, berr = options.max_bytes(o.max_bytes)
  if berr then usage(berr) end
  if items then
    return many.run("restore", o, items, jobs, function(item) return restore_item(item, o, max_bytes) end)
  end
  local p = report.progress_for(o)
  local r, err, code, partial = require("ferry").restore {
    state = o.state, progress = p, max_bytes = max_bytes, allow_outside_symlinks = o.allow_outside_symlinks,
    secrets = options.secret_values(o.secret_env), git = git_lines.git_option(o),
    credentials = o.copy_back_credentials and "copy-back" or nil, session = options.session(o),
  }
  if not r then report.failure(o, p, "restore", err, code, partial) end
  local obj = report.result_object("restore", r, require("ferry.state").read(r.state or o.state))
  report.success(o, p, obj, human_restore)
  return git_lines.restore_exit(obj)
end)

return M
