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

--- Bytes of stdin that may be written but not yet taken by the pipe: the next chunk is made (a tar stream
--- read from disk, say) while these drain, instead of after.
M.WINDOW = 4 * 1024 * 1024

--- Write the chunks of `read` (a function returning strings, then nil) to a process's stdin, keeping at most
--- M.WINDOW bytes (plus one chunk) queued and not yet taken, so a huge reader never sits in memory; stops
--- reading when is_done() says so. Returns true when every chunk went in, false when a write failed (the
--- child closed its stdin first). Raises when `read` returns something other than a string or nil.
---@param handle table  a core.proc_start handle
---@param read function
---@param is_done function|nil
---@return boolean
function M.write_all(handle, read, is_done)
  local queued, failed, waiting, limit = 0, false, nil, M.WINDOW
  local function settle(max)
    if queued <= max or failed then return end
    limit = max
    task.await(function(wake) waiting = wake end)
  end
  while not (is_done and is_done()) do
    local chunk = read()
    if chunk == nil then break end
    if type(chunk) ~= "string" then
      error("the stdin function returned a " .. type(chunk) .. ", expected a string or nil", 0)
    end
    if #chunk > 0 then
      local n = #chunk
      queued = queued + n
      local ok = handle:write(chunk, function(werr)
        queued = queued - n
        if werr then failed = true end
        if waiting and (failed or queued <= limit) then
          local wake = waiting
          waiting = nil
          wake()
        end
      end)
      if not ok then return false end
      settle(M.WINDOW)
      if failed then return false end
    end
  end
  settle(0)
  return not failed
end

-- Feed stdin: a string at once, a reader chunk by chunk (M.write_all). Returns true when every chunk went in,
-- false when the child closed its stdin first (the rest is not wanted).
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
  local ok, err = pcall(M.write_all, handle, stdin, is_done)
  if not ok then
    handle:close_stdin()
    error("proc.run: " .. tostring(err), 0)
  end
  return err and not is_done()
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
