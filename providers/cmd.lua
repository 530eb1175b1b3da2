--- Provider `cmd:ARGV...`: the words after `cmd:` are a command prefix; ferry runs `ARGV... sh -c SCRIPT`
-- on this host with stdin and stdout piped (e.g. `cmd:docker exec -i box`, `cmd:env PATH=/opt/bin:/bin`).
-- The words are split as a POSIX shell splits them (quotes and backslashes), without any expansion.
local core = require "ferry.core"
local util = require "ferry.provider_util"

local M = {}

M.usage = "cmd:ARGV..."
M.help = "runs ARGV... sh -c SCRIPT on this host (e.g. cmd:docker exec -i BOX)"

local PROBE_TIMEOUT_MS = 30000

-- The text of a double-quoted word from s[i] (just after the quote): returns text, index after the closing quote.
local function double_quoted(s, i)
  local out = {}
  while i <= #s do
    local c = s:sub(i, i)
    if c == '"' then return table.concat(out), i + 1 end
    if c == "\\" and i < #s then
      local nxt = s:sub(i + 1, i + 1)
      if nxt == "\n" then
        i = i + 2
      elseif nxt:match('[$`"\\]') then
        out[#out + 1] = nxt
        i = i + 2
      else
        out[#out + 1] = c
        i = i + 1
      end
    else
      out[#out + 1] = c
      i = i + 1
    end
  end
  return nil
end

--- Split a string into words as a POSIX shell does: blanks separate words; '...' is literal; "..." keeps
--- blanks and honours \ before $ ` " \ and newline; a \ outside quotes takes the next character literally.
--- No expansion of any kind. Returns the list of words, or nil and a message.
---@param s string
---@return string[]|nil words, string|nil err
function M.split(s)
  local words, cur, i = {}, nil, 1
  while i <= #s do
    local c = s:sub(i, i)
    if c == " " or c == "\t" or c == "\n" then
      if cur then words[#words + 1], cur = cur, nil end
      i = i + 1
    elseif c == "'" then
      local close = s:find("'", i + 1, true)
      if not close then return nil, "unterminated ' quote" end
      cur = (cur or "") .. s:sub(i + 1, close - 1)
      i = close + 1
    elseif c == '"' then
      local text, after = double_quoted(s, i + 1)
      if not text then return nil, 'unterminated " quote' end
      cur, i = (cur or "") .. text, after
    elseif c == "\\" then
      if i == #s then return nil, "a \\ at the end has nothing to escape" end
      local nxt = s:sub(i + 1, i + 1)
      if nxt ~= "\n" then cur = (cur or "") .. nxt end
      i = i + 2
    else
      cur = (cur or "") .. c
      i = i + 1
    end
  end
  if cur then words[#words + 1] = cur end
  return words
end

local Cmd = {}
Cmd.__index = Cmd

--- The argv that runs `script`: the prefix, then sh -c script.
---@param script string
---@return string[]
function Cmd:command(script)
  return util.with(self.prefix, "sh", "-c", script)
end

function Cmd.close() end

-- One command through the prefix tells a missing program or an unreachable sandbox from a working one.
local function probe(p, opts)
  local timeout = opts.probe_timeout_ms or PROBE_TIMEOUT_MS
  local res, err, code = util.probe(p, opts, timeout)
  local prefix_shown = core.sh_join(p.prefix)
  if not res then
    return nil, string.format("%s: cannot run '%s': %s; the words after cmd: must start with an installed "
      .. "program (e.g. cmd:docker exec -i BOX)", p.name, p.prefix[1], err), code
  end
  if res.timed_out then
    return nil, string.format("%s: the sandbox did not answer within %d s; check that `%s sh -c true` "
      .. "works in a terminal", p.name, timeout // 1000, prefix_shown), "ETIMEDOUT"
  end
  if not util.answered(res) then
    return nil, string.format("%s: the sandbox is unreachable: a probe exited with code %s%s; check that "
      .. "`%s sh -c true` works in a terminal", p.name, tostring(res.code or res.signal), util.stderr_note(res),
      prefix_shown), "EHOSTUNREACH"
  end
  return true
end

--- Open the provider: split the prefix and, unless opts.probe == false, run one probe command through it.
---@param arg string  the text after "cmd:"
---@param opts table|nil  probe (bool), probe_timeout_ms, on_exec
---@return table|nil provider, string|nil err, string|nil code
function M.open(arg, opts)
  opts = opts or {}
  local name = "cmd:" .. (arg or "")
  local words, err = M.split(arg or "")
  if not words then return nil, name .. ": " .. err .. " in the command prefix", "EINVAL" end
  if #words == 0 then
    return nil, name .. ": expected a command prefix after cmd:, e.g. cmd:docker exec -i BOX", "EINVAL"
  end
  local p = setmetatable({
    name = name,
    prefix = words,
    caps = { stdin = true, binary = true },
    default_remote_dir = nil,
    scratch_dir = "/tmp",
  }, Cmd)
  return util.checked(p, opts, probe)
end

return M
