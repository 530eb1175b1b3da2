--- `prepare --many FILE` / `restore --many FILE`: several sandboxes from a JSON list, at most --jobs at a time on
--- one loop. Reading and checking FILE, the pool, a line (or JSON object) per sandbox, and the final result.
local git_lines = require "ferry.cli.git_lines"
local registry = require "ferry.cli.registry"
local report = require "ferry.cli.report"
local progress = require "ferry.progress"

local EXIT = registry.EXIT
local say, usage = registry.say, registry.usage
local M = {}

M.DEFAULT_JOBS = 8

local FIELDS = {
  prepare = { required = { "provider", "workspace", "state" }, optional = { "adapter", "remote_dir" } },
  restore = { required = { "state" }, optional = { "provider", "adapter", "workspace", "remote_dir" } },
}

--- The value of --jobs: an integer >= 1 (default 8).
---@param value string|nil
---@return integer|nil jobs
---@return string|nil err
function M.parse_jobs(value)
  if value == nil then return M.DEFAULT_JOBS end
  local n = value:match("^%d+$") and math.tointeger(tonumber(value))
  if not n or n < 1 then return nil, "--jobs expects an integer >= 1, got '" .. value .. "'" end
  return n
end

-- Each item must be an object of non-empty strings holding the verb's required fields and no unknown one.
local function check_items(list, path, verb)
  local fields = FIELDS[verb]
  local known = {}
  for _, k in ipairs(fields.required) do known[k] = true end
  for _, k in ipairs(fields.optional) do known[k] = true end
  for i, item in ipairs(list) do
    local where = "--many: " .. path .. ": item " .. i
    if type(item) ~= "table" then return nil, where .. ": expected an object" end
    for _, k in ipairs(fields.required) do
      if item[k] == nil then return nil, where .. ": missing field \"" .. k .. "\"" end
    end
    for k, v in pairs(item) do
      if not known[k] then return nil, where .. ": unknown field \"" .. tostring(k) .. "\"" end
      if type(v) ~= "string" or v == "" then
        return nil, where .. ": field \"" .. k .. "\" must be a non-empty string"
      end
    end
  end
  return list
end

--- Read a --many FILE: a JSON list of objects with the verb's fields (prepare: provider, workspace, state
--- required; adapter, remote_dir optional. restore: state required, the prepare fields allowed). Items are
--- numbered from 1 in messages.
---@param path string
---@param verb string  "prepare"|"restore"
---@return table|nil items
---@return string|nil err  "FILE: ..." naming the item index and the field
function M.load(path, verb)
  local f, oerr = io.open(path, "rb")
  if not f then return nil, "--many: " .. oerr end
  local text = f:read("a")
  f:close()
  local ok, list = pcall(require("cjson").decode, text)
  if not ok then return nil, "--many: " .. path .. ": not JSON: " .. tostring(list) end
  -- cjson reads {} and [] alike: only a text that starts with '[' is a list.
  if type(list) ~= "table" or not text:match("^%s*%[") then
    return nil, "--many: " .. path .. ": expected a JSON list of objects"
  end
  return check_items(list, path, verb)
end

--- The items of --many FILE and the --jobs value, or nil without --many. A usage error (exit 2) for --jobs
--- without --many, for an option in `single` given with it (those name one sandbox: FILE names them per item),
--- and for a bad --jobs value or FILE.
---@param verb string  "prepare"|"restore"
---@param o table  the verb's options
---@param single table  {{key, option name}, ...}
---@return table|nil items
---@return integer|nil jobs
function M.items(verb, o, single)
  if not o.many then
    if o.jobs then usage("--jobs needs --many FILE") end
    return nil
  end
  for _, name in ipairs(single) do
    if o[name[1]] then usage(name[2] .. " cannot be combined with --many (give it per item in FILE)") end
  end
  local jobs, err = M.parse_jobs(o.jobs)
  if not jobs then usage(err) end
  local items, lerr = M.load(o.many, verb)
  if not items then usage(lerr) end
  return items, jobs
end

-- What a --many summary line names a sandbox by: the workspace for prepare, the state file for restore.
local function line(verb, e)
  local name = verb == "prepare" and e.workspace or e.state
  local text = string.format("%s %s -> %s:%s (%s, %d ms)", e.ok and "ok" or "FAILED", tostring(name),
    tostring(e.provider or "?"), tostring(e.remote_dir or "?"), report.human_bytes(e.bytes), e.ms)
  if not e.ok then return text .. ": " .. tostring(e.error) end
  if e.conflicts and #e.conflicts > 0 then text = text .. ", " .. report.plural(#e.conflicts, "conflict") end
  local git = git_lines.summary(e.git)
  if git then text = text .. ", " .. git end
  return text
end

-- The per-sandbox object: the verb's result, or {ok = false, error, code}, with what the item named filled in.
local function entry(verb, item, index, obj, raised, ms)
  local e = obj or { error = tostring(raised), code = "EFAULT" }
  e.verb, e.index, e.ms = verb, index, math.floor(ms + 0.5)
  e.ok = e.error == nil
  if verb == "restore" and not e.ok then
    local st = require("ferry.state").read(item.state) or {}
    e.provider, e.remote_dir, e.workspace = st.provider, st.remote_dir, st.workspace
  end
  for k, v in pairs(item) do
    if e[k] == nil then e[k] = v end
  end
  e.bytes = e.bytes or 0
  return e
end

-- The last output: with --json {"event":"result","ok":...,"results":[...]} (in FILE order), else counts.
local function finish(verb, o, entries, n_failed, conflicts)
  if o.json then
    -- the encoder of the single verbs' output: an empty list is [], an empty map {} (ferry.progress.object)
    say(io.stdout, progress.encode { event = "result", verb = verb, ok = n_failed == 0, failed = n_failed,
      results = entries }, "\n")
  else
    say(io.stdout, verb, " --many: ", #entries - n_failed, " ok, ", n_failed, " failed",
      conflicts > 0 and (", " .. conflicts .. " with conflicts or commits on a ferry/ branch") or "", "\n")
  end
end

--- Run `run_item(item)` over the items, at most `jobs` at once; print a line (or a JSON object with --json) per
--- sandbox as it finishes, then the final result. run_item returns the item's result object or
--- {error, code[, refused]}.
--- Exit 1 when any failed, else 3 when a restore had conflicts or kept its commits on a ferry/ branch, else 0.
---@param verb string  "prepare"|"restore"
---@param o table  the verb's options
---@param items table
---@param jobs integer
---@param run_item fun(item: table): table
---@return integer exit code
function M.run(verb, o, items, jobs, run_item)
  local core = require "ferry.core"
  progress.verbose = o.verbose and true or false -- the items run without a reporter: -v goes through ferry.log
  local started = {}
  local entries = {}
  require("ferry.pool").run(items, jobs, function(item, i)
    started[i] = core.now_ms()
    return run_item(item)
  end, function(i, value, err)
    local e = entry(verb, items[i], i, value, err, core.now_ms() - started[i])
    entries[i] = e
    if o.json then
      local event = report.copy_fields(e)
      event.event = "sandbox"
      say(io.stdout, progress.encode(event), "\n")
    else
      say(io.stdout, line(verb, e), "\n")
    end
    io.stdout:flush()
  end)
  local n_failed, conflicts = 0, 0
  for i = 1, #items do
    if not entries[i].ok then n_failed = n_failed + 1 end
    local e = entries[i]
    if (e.conflicts and #e.conflicts > 0) or git_lines.kept_on_ferry_ref(e) then conflicts = conflicts + 1 end
  end
  finish(verb, o, entries, n_failed, conflicts)
  if n_failed > 0 then return EXIT.failed end
  if conflicts > 0 then return EXIT.conflicts end
  return EXIT.ok
end

return M
