--- ferry.launch: how the agent of a prepared sandbox is started (README "Launching the agent"). The adapter's
-- `launch(ctx)` says what its CLI needs (M.plan): environment variables pointing at its assets and config
-- dirs, dirs to put first on PATH, its command, and dirs and links to make in the sandbox. Prepare makes
-- those in its sync command (M.setup_lines, which also checks that HOME is a writable dir) and returns the
-- launch (M.result): {cwd = the remote workspace, env, path, command}, also kept in the state file so that
-- `ferry exec --state FILE -- CMD` runs CMD that way (M.script).
local core = require "ferry.core"
local install = require "ferry.install"
local remote = require "ferry.remote"

local M = {}

local q = core.sh_quote

local NAME = "^[%a_][%w_]*$"

-- The problem with a launch table, as "field 'x' must be ...", or nil.
local function absolute(v)
  return type(v) == "string" and v:sub(1, 1) == "/" and not v:find("\0", 1, true)
end

local function check_list(t, field, ok, what)
  if t == nil then return nil end
  if type(t) ~= "table" then return "field '" .. field .. "' must be a list, got " .. type(t) end
  for i, v in ipairs(t) do
    if not ok(v) then return string.format("field '%s[%d]' must be %s, got %s", field, i, what, tostring(v)) end
  end
  return nil
end

local function check_env(env)
  if env == nil then return nil end
  if type(env) ~= "table" then return "field 'env' must be a table, got " .. type(env) end
  for k, v in pairs(env) do
    if type(k) ~= "string" or not k:match(NAME) then
      return "field 'env' has a key that is not a variable name: " .. tostring(k)
    end
    if type(v) ~= "string" and math.type(v) ~= "integer" then
      return "field 'env." .. k .. "' must be a string, got " .. type(v)
    end
    if tostring(v):find("\0", 1, true) then return "field 'env." .. k .. "' contains a NUL byte" end
  end
  return nil
end

local function check_links(links)
  if links == nil then return nil end
  if type(links) ~= "table" then return "field 'links' must be a table, got " .. type(links) end
  for path, target in pairs(links) do
    if not absolute(path) or not absolute(target) then
      return "field 'links' must map absolute paths to absolute paths, got " .. tostring(path) .. " -> "
        .. tostring(target)
    end
  end
  return nil
end

local function check(t)
  if type(t) ~= "table" then return "must return a table, got " .. type(t) end
  local known = { env = true, path = true, command = true, dirs = true, links = true }
  for k in pairs(t) do
    if not known[k] then return "unknown field '" .. tostring(k) .. "' (env, path, command, dirs, links)" end
  end
  local path_ok = function(v) return absolute(v) and not v:find(":", 1, true) end
  return check_env(t.env)
    or check_list(t.path, "path", path_ok, "an absolute dir without ':'")
    or check_list(t.command, "command", function(v) return type(v) == "string" end, "a string")
    or (t.command and #t.command == 0 and "field 'command' must not be empty")
    or check_list(t.dirs, "dirs", absolute, "an absolute path")
    or check_links(t.links)
end

--- The adapter's own dir in the sandbox, <remote_dir>/.ferry-runtime/<adapter>: its assets are its subdirs.
---@param remote_dir string
---@param adapter_name string
---@return string
function M.adapter_dir(remote_dir, adapter_name)
  return remote_dir .. "/" .. remote.RUNTIME_DIR .. "/" .. adapter_name
end

--- The HOME the agent gets when the sandbox's is not a writable dir: <user prefix>/home.
---@param prefix string
---@return string
function M.fallback_home(prefix)
  return prefix .. "/home"
end

--- The launch plan of a prepare, worked out on the host before the sandbox changes: the adapter's
--- launch(ctx) checked, with the user prefix's bin dirs first on PATH when the adapter installs. `ctx` is
--- the hook context; launch gets a copy with `adapter_dir` and `prefix` too. Returns {cwd, env, path,
--- command, dirs, links, home (the fallback HOME)} or nil, message, code.
---@param adapter table
---@param ctx table
---@param runtime_dir string  <remote>/.ferry-runtime
---@param remote_dir string
---@return table|nil plan, string|nil err, string|nil code
function M.plan(adapter, ctx, runtime_dir, remote_dir)
  local prefix = install.prefix(runtime_dir, adapter.name)
  if install.installs(adapter) and type(ctx.asset_dirs) == "table" and ctx.asset_dirs.prefix then
    return nil, "prepare: asset key 'prefix' is taken: adapter " .. adapter.name .. " installs into " .. prefix,
      "EINVAL"
  end
  local t = {}
  if adapter.launch then
    local lctx = setmetatable({ adapter_dir = M.adapter_dir(remote_dir, adapter.name), prefix = prefix },
      { __index = ctx })
    local ok, got = pcall(adapter.launch, lctx)
    if not ok then return nil, "prepare: adapter " .. adapter.name .. " launch failed: " .. tostring(got), "EINVAL" end
    local why = check(got)
    if why then return nil, "prepare: adapter " .. adapter.name .. " launch: " .. why, "EINVAL" end
    t = got
  end
  local plan = { cwd = remote_dir, env = {}, path = {}, dirs = {}, links = {}, home = M.fallback_home(prefix) }
  for k, v in pairs(t.env or {}) do plan.env[k] = tostring(v) end
  if install.installs(adapter) then table.move(install.bin_dirs(prefix), 1, 2, 1, plan.path) end
  table.move(t.path or {}, 1, #(t.path or {}), #plan.path + 1, plan.path)
  plan.command = t.command and table.move(t.command, 1, #t.command, 1, {})
    or (adapter.detect and { adapter.detect } or nil)
  table.move(t.dirs or {}, 1, #(t.dirs or {}), 1, plan.dirs)
  local links = {}
  for path in pairs(t.links or {}) do links[#links + 1] = path end
  table.sort(links)
  for i, path in ipairs(links) do plan.links[i] = { path = path, target = t.links[path] } end
  return plan
end

-- printf '<format>\n' WORD >&2: a note for M.result on the sync's stderr.
local function note(format, ...)
  local words = {}
  for i, w in ipairs { ... } do words[i] = q(w) end
  return "printf " .. q("ferry-launch: " .. format .. "\n") .. " " .. table.concat(words, " ") .. " >&2"
end

--- Shell lines for the sync command (none of them fails it): make the plan's dirs and links (a path that is
--- a real directory is left alone), and report a HOME that is not a writable dir (after making the
--- fallback). What went wrong is printed as "ferry-launch: ..." lines on stderr (M.result reads them).
---@param plan table
---@return string
function M.setup_lines(plan)
  local lines = {
    '{ [ -d "${HOME:-/nonexistent}" ] && [ -w "$HOME" ]; } || { mkdir -p -- ' .. q(plan.home) .. " 2>/dev/null; "
      .. note("home") .. "; }",
  }
  local dirs = table.move(plan.dirs, 1, #plan.dirs, 1, {})
  for _, l in ipairs(plan.links) do dirs[#dirs + 1] = l.path:match("^(.*)/[^/]+$") end
  for _, d in ipairs(dirs) do
    if d ~= "" then lines[#lines + 1] = "mkdir -p -- " .. q(d) .. " 2>/dev/null || " .. note("cannot create %s", d) end
  end
  for _, l in ipairs(plan.links) do
    local path = q(l.path)
    lines[#lines + 1] = "if [ -d " .. path .. " ] && [ ! -L " .. path .. " ]; then "
      .. note("%s is a directory: not linked to %s", l.path, l.target) .. "; else ln -sfn -- " .. q(l.target)
      .. " " .. path .. " 2>/dev/null || " .. note("cannot link %s to %s", l.path, l.target) .. "; fi"
  end
  return table.concat(lines, "\n")
end

--- The launch of the prepare's result and state file: {cwd, env, path, command}, with HOME set to the
--- fallback when the sync reported the sandbox's HOME unusable (and the adapter set none). What the setup
--- could not make becomes a warning ("launch: cannot create DIR").
---@param plan table
---@param stderr string|nil  the sync command's
---@param warnings string[]
---@return table
function M.result(plan, stderr, warnings)
  local env = {}
  for k, v in pairs(plan.env) do env[k] = v end
  for line in (stderr or ""):gmatch("ferry%-launch: ([^\n]*)") do
    if line == "home" then
      env.HOME = env.HOME or plan.home
    else
      warnings[#warnings + 1] = "launch: " .. line
    end
  end
  return { cwd = plan.cwd, env = env, path = table.move(plan.path, 1, #plan.path, 1, {}), command = plan.command }
end

--- The sandbox command running `argv` as the launch says: PATH with the launch's dirs first, then `argv`
--- (its environment and cwd are the command's options: see M.exec_options).
---@param launch table  the state file's
---@param argv string[]
---@return string
function M.script(launch, argv)
  local path = type(launch.path) == "table" and launch.path or {}
  local line = ""
  if #path > 0 then line = "PATH=" .. q(table.concat(path, ":")) .. "${PATH:+:$PATH}; export PATH; " end
  return line .. "exec " .. core.sh_join(argv)
end

--- The state file's launch, checked: {cwd, env, path} (or nil and why not when the state has none or a bad
--- one: a state written before launches were kept).
---@param st table  a state read with ferry.state.read
---@return table|nil launch, string|nil err
function M.from_state(st)
  local l = st.launch
  if type(l) ~= "table" then return nil, "it has no launch (prepare it again with this ferry)" end
  if type(l.cwd) ~= "string" or l.cwd:sub(1, 1) ~= "/" then return nil, "its launch has no cwd" end
  local why = check_env(l.env) or check_list(l.path, "path", absolute, "an absolute dir")
  if why then return nil, "its launch: " .. why end
  return { cwd = l.cwd, env = l.env or {}, path = l.path or {}, command = l.command }
end

return M
