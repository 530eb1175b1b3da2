--- ferry.proc: run a program and collect its result (see README "ferry.proc.run").
local core = require "ferry.core"
local task = require "ferry.task"

local M = {}

local function check_opts(opts)
  if type(opts) ~= "table" then error("proc.run: expected an options table, got " .. type(opts), 3) end
  local stdin = opts.stdin
  local t = type(stdin)
  if stdin ~= nil and t ~= "string" and t ~= "function" then
    error("proc.run: opts.stdin must be a string or a function, got " .. t, 3)
  end
  for _, k in ipairs { "on_stdout", "on_stderr", "on_spawn" } do
    if opts[k] ~= nil and type(opts[k]) ~= "function" then
      error("proc.run: opts." .. k .. " must be a function", 3)
    end
  end
end

-- Copy of opts as core.proc_start takes it: stdin becomes "piped or not"; keep_stdin pipes it and stops the
-- child through it first (eof_first).
local function core_opts(opts)
  local c = {}
  for k, v in pairs(opts) do c[k] = v end
  c.stdin = opts.stdin ~= nil or opts.keep_stdin == true
  c.eof_first = opts.keep_stdin == true
  if opts.timeout_ms ~= nil and (type(opts.timeout_ms) ~= "number" or opts.timeout_ms < 0) then
    error("proc.run: opts.timeout_ms must be a number >= 0", 4)
  end
  return c
end

-- Feed stdin chunk by chunk: each write waits until the pipe took it, so a huge reader never sits in memory.
-- Returns true when every chunk went in, false when the child closed its stdin first.
local function feed(handle, stdin, is_done)
  if type(stdin) == "string" then
    if #stdin > 0 then
      local werr = task.await(function(wake)
        local ok, err = handle:write(stdin, wake)
        if not ok then wake(err) end
      end)
      if werr then return false end
    end
    return true
  end
  while not is_done() do
    local chunk = stdin()
    if chunk == nil then return true end
    if type(chunk) ~= "string" then
      handle:close_stdin()
      error("proc.run: the stdin function returned a " .. type(chunk) .. ", expected a string or nil", 0)
    end
    if #chunk > 0 then
      local werr = task.await(function(wake)
        local ok, err = handle:write(chunk, wake)
        if not ok then wake(err) end
      end)
      if werr then return false end -- the child closed its stdin: the rest is not wanted
    end
  end
  return false
end

local function run_in_task(opts)
  if not opts.cleanup then task.check_interrupted() end
  local interrupts = task.interrupts()
  local result, waiting
  local handle, err, code = core.proc_start(core_opts(opts), function(res)
    result = res
    if waiting then waiting(res) end
  end)
  if not handle then return nil, err, code end
  if opts.on_spawn then opts.on_spawn(handle.pid, handle.started_at, handle) end
  if opts.stdin ~= nil then
    local ok, ferr = pcall(feed, handle, opts.stdin, function() return result ~= nil end)
    if not ok then
      handle:kill("SIGKILL")
      if not result then task.await(function(wake) waiting = wake end) end
      error(ferr, 0)
    end
  end
  if not opts.keep_stdin then handle:close_stdin() end
  if not result then task.await(function(wake) waiting = wake end) end
  handle:close_stdin()
  if opts.on_stdout then result.stdout = nil end
  if opts.on_stderr then result.stderr = nil end
  if task.interrupts() ~= interrupts and not opts.cleanup then task.check_interrupted() end
  return result
end

--- Run a program. See README for the options and the result table. Raises "interrupted (<signal>)" when
--- ferry was interrupted (ferry.task.interrupt) before it started or while it ran (it was stopped first),
--- unless opts.cleanup (a step that must run on the way out, such as closing a connection).
---@param opts table  argv, cwd, env, clear_env, stdin, keep_stdin, timeout_ms, kill_grace_ms, max_output,
---                   on_stdout, on_stderr, on_spawn, cleanup
---@return table|nil result, string|nil err, string|nil code
function M.run(opts)
  check_opts(opts)
  return task.block(run_in_task, opts)
end

return M
