--- ferry.provider_util: what the providers (and the client and session over them) share: the tail of a
-- command's stderr for error messages, the probe command run when a provider opens, the error for a program
-- that did not start, argv building and URL decoding.
local proc = require "ferry.proc"

local M = {}

--- The script a provider runs at open time; a sandbox that works prints M.PROBE_OK.
M.PROBE = "echo ferry-probe-ok"
M.PROBE_OK = "ferry-probe-ok"

--- The end of a command's output for an error message: its last three non-blank lines joined with "; ", cut
--- to the last 400 bytes ("" for nil or blank text).
---@param text string|nil
---@return string
function M.tail(text)
  local lines = {}
  for line in (text or ""):gmatch("[^\r\n]+") do
    if line:match("%S") then lines[#lines + 1] = line end
  end
  local out = table.concat(lines, "; ", math.max(1, #lines - 2))
  return #out > 400 and out:sub(-400) or out
end

--- Why a command failed: the tail of its stderr, else "exit code N" (or the signal when it has no code).
---@param res table  a proc.run result
---@return string
function M.why(res)
  local why = M.tail(res.stderr)
  if why == "" then why = "exit code " .. tostring(res.code or res.signal) end
  return why
end

--- The tail of a command's stderr as " (tail)" to append to a message, or "" when stderr is blank.
---@param res table  a proc.run result
---@return string
function M.stderr_note(res)
  local why = M.tail(res.stderr)
  return why ~= "" and (" (" .. why .. ")") or ""
end

--- A new argv: a copy of `argv` followed by the other arguments.
---@param argv string[]
---@return string[]
function M.with(argv, ...)
  local out = table.move(argv, 1, #argv, 1, {})
  for _, a in ipairs { ... } do out[#out + 1] = a end
  return out
end

--- Decode %XX escapes (a URL's user or query value).
---@param s string
---@return string
function M.url_decode(s)
  return (s:gsub("%%(%x%x)", function(hex) return string.char(tonumber(hex, 16)) end))
end

--- Run `argv` (which runs `script`) once, shown to opts.on_exec first. Returns what proc.run returns.
---@param argv string[]
---@param script string
---@param opts table  on_exec
---@param timeout_ms integer
function M.run_shown(argv, script, opts, timeout_ms)
  if opts.on_exec then opts.on_exec(argv, script) end
  return proc.run { argv = argv, timeout_ms = timeout_ms }
end

--- Run the probe script through provider `p` (`p:command(M.PROBE)`), shown to opts.on_exec first. Returns
--- what proc.run returns; M.answered(result) tells whether the sandbox answered.
---@param p table  a provider
---@param opts table  on_exec
---@param timeout_ms integer
function M.probe(p, opts, timeout_ms)
  return M.run_shown(p:command(M.PROBE), M.PROBE, opts, timeout_ms)
end

--- Whether a probe's result is the answer of a working sandbox: exit code 0 and M.PROBE_OK on stdout.
---@param res table  a proc.run result
---@return boolean
function M.answered(res)
  return res.code == 0 and res.stdout:find(M.PROBE_OK, 1, true) ~= nil
end

--- The error for a provider's program that did not start: "<name>: <shown> is not installed<install> or not
--- on PATH", "ENOENT" when it is missing, else "<name>: cannot run <program>: <err>", code.
--- how: program (the command), shown (its name in the message, default program), install (e.g.
--- " (apt-get install bubblewrap)"), after (appended to either message, e.g. "; use -p local ...").
---@param name string  the provider's name
---@param err string
---@param code string|nil
---@param how table
---@return nil, string message, string|nil code
function M.start_error(name, err, code, how)
  local after = how.after or ""
  if code == "ENOENT" then
    return nil, name .. ": " .. (how.shown or how.program) .. " is not installed" .. (how.install or "")
      .. " or not on PATH" .. after, "ENOENT"
  end
  return nil, name .. ": cannot run " .. how.program .. ": " .. err .. after, code
end

--- Finish opening provider `p`: unless opts.probe == false, run `probe(p, opts)`; when it fails, close `p`
--- and return nil, err, code.
---@param p table  a provider
---@param opts table  probe (bool)
---@param probe function  (p, opts) -> true | nil, err, code
---@return table|nil provider, string|nil err, string|nil code
function M.checked(p, opts, probe)
  if opts.probe == false then return p end
  local ok, err, code = probe(p, opts)
  if ok then return p end
  p:close()
  return nil, err, code
end

return M
