--- The interactive REPL: like the standalone lua, with ferry loaded, line editing, tab completion of names
-- (ferry.repl_complete), tables printed readably (ferry.inspect), and errors shown with the user's own frames.
local core = require "ferry.core"
local inspect = require "ferry.inspect"

local M = {}

--- Where the history is kept: $XDG_STATE_HOME/ferry_history ($XDG_STATE_HOME defaulting to ~/.local/state)
--- when that directory exists, else ~/.ferry_history; nil without a home.
---@return string|nil
function M.history_path()
  local home = os.getenv("HOME")
  local state = os.getenv("XDG_STATE_HOME")
  if (not state or state == "") and home and home ~= "" then state = home .. "/.local/state" end
  local st = state and core.fs_stat(state)
  if st and st.kind == "dir" then return state .. "/ferry_history" end
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

--- How the REPL shows a value: a string as it is (as lua does), anything else through ferry.inspect.
---@param v any
---@return string
function M.show(v)
  if type(v) == "string" then return v end
  return inspect.inspect(v)
end

local function print_values(n, ...)
  if n == 0 then return end
  local parts = {}
  for i = 1, n do parts[i] = M.show((select(i, ...))) end
  io.stdout:write(table.concat(parts, "\t"), "\n")
end

-- ferry's own Lua files (built in, or from a source or installed tree): their frames are not the user's.
local function internal(source)
  return source:sub(1, 9) == "@[ferry]/" or source:match("^@.*/ferry/[%w_/]+%.lua$") ~= nil
end

local function frame_text(info)
  local where = info.currentline > 0 and (info.short_src .. ":" .. info.currentline) or info.short_src
  local what
  if info.what == "main" then
    what = "main chunk"
  elseif info.namewhat == "global" then -- as lua's traceback names it
    what = "function '" .. info.name .. "'"
  elseif info.namewhat ~= "" then
    what = info.namewhat .. " '" .. info.name .. "'"
  else
    what = "function <" .. info.short_src .. ":" .. info.linedefined .. ">"
  end
  return "\t" .. where .. ": in " .. what
end

--- The message of an error raised by a chunk run from the REPL, with a traceback of the user's frames only:
--- those above `boundary` (the function that ran the chunk), less ferry's own files and C functions. Call it
--- from the message handler, whose caller raised (`level` 2).
---@param err any
---@param boundary function  where the user's frames end (core.interrupt_pcall)
---@param level integer|nil  the first stack level to look at (default 2)
---@return string
function M.traceback(err, boundary, level)
  local msg = err
  if type(err) ~= "string" and type(err) ~= "number" then
    local mt = getmetatable(err)
    local shown = (type(mt) == "table" and mt.__tostring) and tostring(err) or nil
    msg = shown or "(error object is " .. inspect.inspect(err) .. ")"
  end
  local frames = {}
  for l = level or 2, 200 do
    local info = debug.getinfo(l, "Slnf")
    if not info or info.func == boundary then break end
    if info.what ~= "C" and not internal(info.source) then frames[#frames + 1] = frame_text(info) end
  end
  if #frames == 0 then return tostring(msg) end
  return tostring(msg) .. "\nstack traceback:\n" .. table.concat(frames, "\n")
end

-- Run a chunk as xpcall would, with Ctrl-C raising "interrupted!" inside it (and stopping its children).
local function evaluate(chunk)
  local results = table.pack(core.interrupt_pcall(chunk, function(e)
    local msg = M.traceback(e, core.interrupt_pcall, 3) -- not a tail call: level 3 is the one that raised
    return msg
  end))
  if results[1] then
    print_values(results.n - 1, table.unpack(results, 2, results.n))
  else
    io.stdout:flush() -- what the chunk printed comes first
    io.stderr:write(require("ferry.printable").text(tostring(results[2])), "\n")
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

local OPTIONS = { options = {
  { names = { "-p", "--provider" }, key = "provider", value = "PROVIDER" },
  { names = { "-v", "--verbose" }, key = "verbose" },
} }

-- The log of the sandbox `sb`: its provider's warnings always, its debug lines (each command) with -v.
local function sandbox_log(verbose)
  return function(level, message)
    if verbose or level == "warn" or level == "error" then
      core.log(level, require("ferry.printable").text(tostring(message)))
    end
  end
end

--- Run the REPL. args: [-p PROVIDER] opens `sb` on that provider; -v shows the policy's info and debug
--- messages (ferry.progress.verbose) and each command run through `sb`.
---@param args string[]
---@return integer exit code
function M.main(args)
  local o, perr = require("ferry.cli.options").parse(args, OPTIONS)
  if not o or #o.args > 0 then
    io.stderr:write("ferry: repl: ", perr or ("unexpected argument '" .. o.args[1] .. "'"),
      "\n(see ferry repl --help)\n")
    return 2
  end
  local ferry = require "ferry"
  _G.ferry = ferry
  require("ferry.progress").verbose = o.verbose and true or false
  if o.provider then
    local sb, err = ferry.open(o.provider, { log = sandbox_log(o.verbose) })
    if not sb then
      io.stderr:write("ferry: repl: ", require("ferry.printable").text(err), "\n")
      return 1
    end
    _G.sb = sb
  end
  local interactive = core.isatty and core.isatty(0)
  local complete = require("ferry.repl_complete").candidates
  local readline = interactive and function(prompt) return core.readline(prompt, complete) end
    or function() return io.read("l") end
  local hist = M.history_path()
  if interactive and hist then core.history_load(hist) end
  if interactive then io.stdout:write("ferry ", ferry.version, " (Lua ", _VERSION:sub(5), ")\n") end
  core.interrupt_install()
  while true do
    local src, chunk, err = read_chunk(readline)
    if src == nil then break end
    if src:match("%S") then
      if interactive then core.history_add(src) end
      if chunk then
        evaluate(chunk)
      else
        io.stdout:flush()
        io.stderr:write(err, "\n")
      end
    end
  end
  if interactive and hist then core.history_save(hist) end
  return 0
end

return M
