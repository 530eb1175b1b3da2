--- How prepare and restore report: the result object (--json's last line), progress output, a human summary,
--- and a failure (still a result object with --json). All output goes through the verb's redactor.
local registry = require "ferry.cli.registry"

local say = registry.say
local M = {}

--- `t` when it is a table, else an empty list.
---@return table
function M.list_or_empty(t)
  return type(t) == "table" and t or {}
end

--- A shallow copy of `r` without its functions and userdata (what JSON can encode).
---@param r table|nil
---@return table
function M.copy_fields(r)
  local out = {}
  for k, v in pairs(r or {}) do
    if type(v) ~= "function" and type(v) ~= "userdata" then out[k] = v end
  end
  return out
end

--- A name as one printable line: control characters, bytes a terminal could act on and backslashes
--- escaped (\n, \t, \e, \xNN, \\; see ferry.printable.name).
M.printable = require("ferry.printable").name

--- A byte count for a human: "1.5 MiB".
---@param n integer|nil
---@return string
function M.human_bytes(n)
  return require("ferry.progress").human(n or 0)
end

--- "1 file", "2 files".
---@param n integer
---@param word string
---@return string
function M.plural(n, word)
  return n .. " " .. word .. (n == 1 and "" or "s")
end

-- The result fields that are maps (name -> value): JSON objects, {} when empty; every other table of the
-- result that is empty is a list, [].
local MAP_FIELDS = { "asset_dirs", "reference_dirs", "conflict_copies" }

--- The result object that --json prints last (as a progress "result" event): the runtime's result plus
--- fields common to both verbs: verb, ok, remote_dir, runtime_dir, asset_dirs, install_ran, bytes (moved),
--- state, and the lists changed, deleted, conflicts, refused (empty after a prepare). Its maps (asset_dirs,
--- reference_dirs, conflict_copies, launch.env) are copies marked as JSON objects (ferry.progress.object).
---@param verb string  "prepare"|"restore"
---@param r table  the runtime's result
---@param st table|nil  the state file's record (restore: where the work came from)
---@return table
function M.result_object(verb, r, st)
  local out = M.copy_fields(r)
  out.verb, out.ok = verb, true
  st = st or {}
  out.provider = out.provider or st.provider
  out.remote_dir = out.remote_dir or st.remote_dir
  out.runtime_dir = out.runtime_dir or st.runtime_dir
  out.asset_dirs = out.asset_dirs or st.assets or {}
  out.install_ran = r.installed ~= nil
  out.bytes = r.bytes_sent or r.bytes_received or 0
  for _, k in ipairs { "changed", "deleted", "conflicts", "refused", "warnings" } do
    out[k] = M.list_or_empty(r[k])
  end
  local object = require("ferry.progress").object
  for _, k in ipairs(MAP_FIELDS) do
    if type(out[k]) == "table" then out[k] = object(M.copy_fields(out[k])) end
  end
  if type(out.launch) == "table" then
    out.launch = M.copy_fields(out.launch)
    out.launch.env = object(M.copy_fields(out.launch.env or {}))
  end
  return out
end

--- The progress reporter of a verb run with options `o`: JSON events with --json, a bar on a terminal; with
--- -v the policy's info and debug messages on stderr.
---@param o table  the verb's options
---@return table progress
function M.progress_for(o)
  local progress = require "ferry.progress"
  local core = require "ferry.core"
  local tty = not o.json and core.isatty ~= nil and core.isatty(2)
  return progress.new { json = o.json and true or false, tty = tty, verbose = o.verbose, redact = registry.redact,
    out = io.stdout, err = io.stderr }
end

local INSTALL_TEXT = {
  none = "no install step", present = "already installed", installed = "installed",
  failed = "install failed (see the warning)", missing = "not installed and no install command",
}

--- The summary of a prepare for a human, on stdout.
---@param r table  the result object
function M.human_prepare(r)
  local out = io.stdout
  say(out, "prepared ", r.workspace or "the workspace", " in ", r.provider or "the sandbox", " at ", r.remote_dir,
    "\n")
  say(out, "  adapter   ", r.adapter or "shell", ": ", INSTALL_TEXT[r.install_status] or tostring(r.install_status),
    "\n")
  say(out, "  sent      ", M.plural(r.files or 0, "file"), ", ", M.plural(r.dirs or 0, "dir"), ", ",
    M.plural(r.symlinks or 0, "symlink"), ": ", M.human_bytes(r.bytes), " in ", M.plural(r.commands or 0, "command"),
    "\n")
  local keys = {}
  for key in pairs(r.asset_dirs) do keys[#keys + 1] = key end
  table.sort(keys)
  for _, key in ipairs(keys) do say(out, "  asset     ", key, " -> ", r.asset_dirs[key], "\n") end
  if r.install_prefix then say(out, "  prefix    ", r.install_prefix, "\n") end
  if r.state then
    say(out, "  state     ", r.state, "\n")
    local command = type(r.launch) == "table" and r.launch.command
    if command then
      say(out, "run the agent with: ferry exec --state ", r.state, " -- ", require("ferry.core").sh_join(command), "\n")
    end
    say(out, "bring the work back with: ferry restore --state ", r.state, "\n")
  end
end

--- The summary of a restore for a human, on stdout: counts, then each changed, deleted and conflicting path.
---@param r table  the result object
function M.human_restore(r)
  local out, printable = io.stdout, M.printable
  say(out, "restored ", r.remote_dir or "the sandbox's workspace", " into ", r.workspace or "the workspace", ": ",
    #r.changed, " changed, ", #r.deleted, " deleted, ", M.plural(#r.conflicts, "conflict"), " (",
    M.human_bytes(r.bytes), " in ", M.plural(r.commands or 0, "command"), ")\n")
  for _, path in ipairs(r.changed) do say(out, "  changed  ", printable(path), "\n") end
  for _, path in ipairs(r.deleted) do say(out, "  deleted  ", printable(path), "\n") end
  local copies = type(r.conflict_copies) == "table" and r.conflict_copies or {}
  for _, path in ipairs(r.conflicts) do
    say(out, "  conflict ", printable(path), ": kept yours; the sandbox's version is ",
      printable(copies[path] or path .. ".ferry-remote"), "\n")
  end
  for _, c in ipairs(M.list_or_empty(r.credentials)) do
    say(out, "  credential ", tostring(c.adapter), " ", printable(tostring(c.path)), ": ", tostring(c.action),
      c.reason and " (" .. printable(tostring(c.reason)) .. ")" or "", "\n")
  end
end

--- Finish the progress output and print the result: the JSON object as the last stdout line with --json,
--- warnings and a short summary (`human(obj)`) for a human otherwise.
---@param o table  the verb's options
---@param p table  its progress reporter
---@param obj table  the result object
---@param human fun(obj: table)
function M.success(o, p, obj, human)
  p:finish(obj)
  if o.json then return end
  for _, w in ipairs(obj.warnings) do
    if w ~= obj.install_warning then say(io.stderr, "ferry: warning: ", w, "\n") end
  end
  human(obj)
end

--- A failed prepare/restore: with --json the last line is still a result object, {ok = false, error, code,
--- refused}; the message goes to stderr either way (the verb stops here, exit 1).
---@param o table  the verb's options
---@param p table  its progress reporter
---@param verb string
---@param err string
---@param code string|nil
---@param partial table|nil  what the runtime returned with the failure (restore: the refused paths)
function M.failure(o, p, verb, err, code, partial)
  local refused = partial and M.list_or_empty(partial.refused) or {}
  if o.json then
    p:finish { verb = verb, ok = false, error = err, code = code, refused = refused }
  else
    p:finish()
    for _, path in ipairs(refused) do say(io.stderr, "  refused  ", M.printable(path), "\n") end
  end
  registry.fail(err)
end

return M
