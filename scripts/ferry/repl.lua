--- The interactive REPL: like the standalone lua, with ferry loaded and line editing.
local core = require "ferry.core"

local M = {}

-- $XDG_STATE_HOME/ferry_history (~/.local/state) when that dir exists, else ~/.ferry_history.
local function history_path()
  local home = os.getenv("HOME")
  local state = os.getenv("XDG_STATE_HOME")
  if (not state or state == "") and home and home ~= "" then state = home .. "/.local/state" end
  local dir = state and io.open(state)
  if dir then
    dir:close()
    return state .. "/ferry_history"
  end
  return home and home ~= "" and home .. "/.ferry_history" or nil
end

-- A chunk is incomplete when its syntax error is at <eof>: keep reading lines.
local function incomplete(err)
  return err and err:sub(-5) == "<eof>"
end

--- Compile `src` as an expression (printing its values) or, failing that, as a statement.
---@return function|nil chunk, string|nil err
function M.compile(src)
  local chunk = load("return " .. src, "=stdin", "t")
  if chunk then return chunk end
  return load(src, "=stdin", "t")
end

local function print_values(n, ...)
  if n == 0 then return end
  local parts = {}
  for i = 1, n do parts[i] = tostring((select(i, ...))) end
  io.stdout:write(table.concat(parts, "\t"), "\n")
end

-- Run a chunk as xpcall would, with Ctrl-C raising "interrupted!" inside it (and stopping its children).
local function evaluate(chunk)
  local results = table.pack(core.interrupt_pcall(chunk, function(e)
    return debug.traceback(tostring(e), 2)
  end))
  if results[1] then
    print_values(results.n - 1, table.unpack(results, 2, results.n))
  else
    io.stderr:write(tostring(results[2]), "\n")
  end
end

--- Read one chunk (several lines while incomplete); nil at end of input.
local function read_chunk(readline)
  local line = readline("> ")
  while line == false do line = readline("> ") end -- Ctrl-C at the prompt: a fresh line
  if line == nil then return nil end
  local src = line:gsub("^=", "return ")
  while true do
    local chunk, err = M.compile(src)
    if chunk or not incomplete(err) then return src, chunk, err end
    local more = readline(">> ")
    if more == false then return "" end
    if more == nil then return src, nil, err end
    src = src .. "\n" .. more
  end
end

--- Run the REPL. args: [-p PROVIDER] opens `sb` on that provider.
---@param args string[]
---@return integer exit code
function M.main(args)
  local ferry = require "ferry"
  _G.ferry = ferry
  if args[1] == "-p" then
    if not args[2] then
      io.stderr:write("ferry: repl: -p needs a PROVIDER\n")
      return 2
    end
    local open = ferry.open
    if not open then
      io.stderr:write("ferry: repl: providers are not available in this build\n")
      return 1
    end
    local sb, err = open(args[2])
    if not sb then
      io.stderr:write("ferry: ", require("ferry.printable").text(err), "\n")
      return 1
    end
    _G.sb = sb
  elseif args[1] then
    io.stderr:write("ferry: repl: unknown argument '", args[1], "'\n")
    return 2
  end
  local interactive = core.isatty and core.isatty(0)
  local readline = interactive and core.readline or function() return io.read("l") end
  local hist = history_path()
  if interactive and hist then core.history_load(hist) end
  if interactive then io.stdout:write("ferry ", ferry.version, " (Lua ", _VERSION:sub(5), ")\n") end
  core.interrupt_install()
  while true do
    local src, chunk, err = read_chunk(readline)
    if src == nil then break end
    if src:match("%S") then
      if interactive then core.history_add(src) end
      if chunk then evaluate(chunk) else io.stderr:write(err, "\n") end
    end
  end
  if interactive and hist then core.history_save(hist) end
  return 0
end

return M
