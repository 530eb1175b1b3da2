--- Progress reporting for prepare and restore: JSON lines, a terminal bar, or quiet.
--
-- Phases: install, sync, assets, restore, finalize. With `json`, each event is one JSON object on its own
-- line on `out` (keys in a fixed order: event, phase, level, message, bytes, total, then the rest sorted;
-- an empty table is written as [], unless M.object marked it as a map: then {}):
--   {"event":"phase","phase":"sync","total":456}                 a phase starts (total omitted if unknown)
--   {"event":"progress","phase":"sync","bytes":123,"total":456}  at most one per `interval` (0.1 s)
--   {"event":"progress","phase":"sync","bytes":456,"total":456,"done":true,"elapsed_ms":812}
--                                                                the phase's final line, always
--   {"event":"message","phase":"install","level":"warn","message":"..."}   p:event{level=, message=}
--   {"event":"result", ...}                                      p:finish(result): the last line
-- With `tty`, a one-line bar on `err` redrawn with "\r" (phase, percent, bytes, rate, ETA); each phase
-- leaves its final line. Colour only on a terminal (`tty`) and unless no_color (default: the NO_COLOR
-- environment variable is set and not empty). Otherwise only warnings and errors are printed, on `err`
-- (with `verbose`, info and debug messages too).
-- Everything written passes through `redact`, then ferry.printable (text for the terminal, json for events):
-- a message quoting the sandbox never reaches the terminal raw.
local cjson = require "cjson"
local printable = require "ferry.printable"
local redact = require "ferry.redact"

local M = {}

M.PHASES = { "install", "sync", "assets", "restore", "finalize" }
local KNOWN_PHASE = {}
for _, name in ipairs(M.PHASES) do KNOWN_PHASE[name] = true end

local KEY_ORDER = { event = 1, phase = 2, level = 3, message = 4, bytes = 5, total = 6 }
local BAR_WIDTH = 20

local function default_now()
  local ok, core = pcall(require, "ferry.core")
  if ok and type(core) == "table" and core.now_ms then
    return function() return core.now_ms() / 1000 end
  end
  return os.time
end

-- The metatable marking a table as a JSON object (M.object), so that an empty one is written as {}.
local OBJECT = { __name = "ferry.progress.object" }

--- Mark `t` as a map (a JSON object: {} when empty, rather than the [] an empty list gets); returns `t`.
---@param t table
---@return table
function M.object(t)
  return setmetatable(t, OBJECT)
end

local function is_array(t)
  if getmetatable(t) == OBJECT then return false end
  local n = #t
  local count = 0
  for _ in pairs(t) do count = count + 1 end
  return count == n
end

local function key_before(a, b)
  local ra, rb = KEY_ORDER[a] or 99, KEY_ORDER[b] or 99
  if ra ~= rb then return ra < rb end
  return a < b
end

-- Like lua-cjson's, without escaping '/' (paths read better); control characters, C1 controls and bytes that
-- are not UTF-8 as \uXXXX (ferry.printable.json).
local function encode_string(s)
  return '"' .. printable.json(s) .. '"'
end

local encode

local function encode_table(t, seen)
  if seen[t] then error("progress: cannot encode a table that contains itself", 0) end
  seen[t] = true
  local parts = {}
  if is_array(t) then
    for i = 1, #t do parts[i] = encode(t[i], seen) end
    seen[t] = nil
    return "[" .. table.concat(parts, ",") .. "]"
  end
  local entries = {}
  for k, v in pairs(t) do entries[#entries + 1] = { name = tostring(k), value = v } end
  table.sort(entries, function(a, b) return key_before(a.name, b.name) end)
  for i, e in ipairs(entries) do parts[i] = encode_string(e.name) .. ":" .. encode(e.value, seen) end
  seen[t] = nil
  return "{" .. table.concat(parts, ",") .. "}"
end

-- JSON with a stable key order (lua-cjson's follows the hash table).
encode = function(v, seen)
  local kind = type(v)
  if kind == "table" then return encode_table(v, seen) end
  if kind == "string" then return encode_string(v) end
  if kind == "boolean" then return tostring(v) end
  if kind == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    if math.type(v) == "integer" then return tostring(v) end
    return cjson.encode(v)
  end
  return "null"
end

--- Encode a value as JSON with keys in the order progress uses (exposed for the CLI's result output).
---@return string
function M.encode(value)
  return encode(value, {})
end

local UNITS = { "KiB", "MiB", "GiB", "TiB" }

--- Bytes in human units: "512 B", "1.5 KiB", "20.0 MiB".
---@param n number
---@return string
function M.human(n)
  if n < 1024 then return string.format("%d B", math.floor(n)) end
  local unit = 0
  repeat
    n = n / 1024
    unit = unit + 1
  until n < 1024 or unit == #UNITS
  return string.format("%.1f %s", n, UNITS[unit])
end

--- A duration in seconds as m:ss or h:mm:ss.
---@param seconds number
---@return string
function M.clock(seconds)
  seconds = math.floor(seconds + 0.5)
  local h, m, s = seconds // 3600, seconds % 3600 // 60, seconds % 60
  if h > 0 then return string.format("%d:%02d:%02d", h, m, s) end
  return string.format("%d:%02d", m, s)
end

local Progress = {}
Progress.__index = Progress

local function paint(self, code, text)
  if not self.color then return text end
  return "\27[" .. code .. "m" .. text .. "\27[0m"
end

-- The bar's text (without "\r"), for the current phase; `done` gives the phase's final form.
function Progress:bar_text(done)
  local elapsed = self.now() - self.started
  local bytes, total = self.bytes, self.total
  local rate = elapsed > 0 and bytes / elapsed or nil
  local fields = { paint(self, "1;36", string.format("%-8s", self.phase_name)) }
  if total then
    local fraction = total > 0 and math.min(bytes / total, 1) or 1
    local filled = math.floor(fraction * BAR_WIDTH)
    fields[#fields + 1] = "[" .. paint(self, "32", string.rep("#", filled)) .. string.rep("-", BAR_WIDTH - filled)
      .. "]"
    fields[#fields + 1] = string.format("%3d%%", math.floor(fraction * 100))
    fields[#fields + 1] = M.human(bytes) .. " / " .. M.human(total)
  elseif bytes > 0 then
    fields[#fields + 1] = M.human(bytes)
  end
  if bytes > 0 then fields[#fields + 1] = rate and (M.human(rate) .. "/s") or "--/s" end
  if done then
    fields[#fields + 1] = paint(self, "32", "done") .. " in " .. M.clock(elapsed)
  elseif total then
    local eta = (rate and rate > 0) and M.clock((total - math.min(bytes, total)) / rate) or "-:--"
    fields[#fields + 1] = "ETA " .. eta
  else
    fields[#fields + 1] = M.clock(elapsed)
  end
  if self.status_text and not done then fields[#fields + 1] = self.status_text end
  return table.concat(fields, "  ")
end

local function visible_length(text)
  return #text:gsub("\27%[[%d;]*m", "")
end

function Progress:draw(done)
  -- phase names, figures and the status line, which status() made printable
  local text = self.redact(self:bar_text(done))
  local length = visible_length(text)
  local pad = math.max(self.drawn - length, 0)
  self.err:write("\r", text, string.rep(" ", pad), done and "\n" or "")
  self.drawn = done and 0 or length
  if self.err.flush then self.err:flush() end
end

function Progress:clear_bar()
  if self.drawn > 0 then
    self.err:write("\r", string.rep(" ", self.drawn), "\r")
    self.drawn = 0
  end
end

function Progress:emit(event)
  self.out:write(M.encode(self.redact_deep(event)), "\n")
  if self.out.flush then self.out:flush() end
end

function Progress:check_open(what)
  if self.finished then error("progress:" .. what .. ": called after finish", 3) end
end

function Progress:end_phase()
  if not self.phase_name then return end
  if self.json then
    self:emit({ event = "progress", phase = self.phase_name, bytes = self.bytes, total = self.total, done = true,
      elapsed_ms = math.floor((self.now() - self.started) * 1000 + 0.5) })
  end
  if self.tty then self:draw(true) end
  self.phase_name = nil
end

--- Start a phase (ending the current one). `total` is the byte count expected, or nil when unknown.
---@param name string  install, sync, assets, restore or finalize
---@param total integer|nil
function Progress:phase(name, total)
  self:check_open("phase")
  if not KNOWN_PHASE[name] then
    error("progress:phase: unknown phase " .. tostring(name) .. " (" .. table.concat(M.PHASES, ", ") .. ")", 2)
  end
  if total ~= nil and (type(total) ~= "number" or total < 0) then
    error("progress:phase: total must be a non-negative number or nil", 2)
  end
  self:end_phase()
  self.phase_name, self.bytes, self.total, self.status_text = name, 0, total, nil
  self.started = self.now()
  self.last_update = self.started
  if self.json then self:emit({ event = "phase", phase = name, total = total }) end
  if self.tty then self:draw(false) end
end

--- Set the current phase's total once it is known.
---@param total integer
function Progress:set_total(total)
  self:check_open("set_total")
  if not self.phase_name then error("progress:set_total: no phase started", 2) end
  self.total = total
end

--- Count `n` more bytes in the current phase.
---@param n integer
function Progress:advance(n)
  self:check_open("advance")
  if not self.phase_name then error("progress:advance: no phase started", 2) end
  if type(n) ~= "number" or n < 0 then error("progress:advance: bytes must be a non-negative number", 2) end
  self.bytes = self.bytes + n
  local now = self.now()
  if now - self.last_update < self.interval - 1e-9 then return end -- 1e-9: clocks in float seconds
  self.last_update = now
  if self.json then
    self:emit({ event = "progress", phase = self.phase_name, bytes = self.bytes, total = self.total })
  end
  if self.tty then self:draw(false) end
end

-- The longest status line the bar shows (it must fit on one terminal line, or "\r" cannot redraw it).
local STATUS_WIDTH = 60

--- Show `text` (a line of a command's output, from the sandbox) after the bar's timer on a terminal, until the
--- next status or nil; redrawn at most once per `interval`. JSON output and other reporters show nothing
--- (the caller sends an event).
---@param text string|nil
function Progress:status(text)
  self:check_open("status")
  if not self.tty then return end
  if text then
    text = self.redact(tostring(text)):gsub("[%c]", " ")
    if #text > STATUS_WIDTH then text = text:sub(1, STATUS_WIDTH - 3) .. "..." end
    text = printable.text(text)
  end
  self.status_text = text
  local now = self.now()
  if self.phase_name and (text == nil or now - self.last_update >= self.interval - 1e-9) then
    self.last_update = now
    self:draw(false)
  end
end

--- Redraw the bar (its timer moves on while nothing else happens); a no-op without a terminal.
function Progress:tick()
  self:check_open("tick")
  if self.tty and self.phase_name then self:draw(false) end
end

-- How a message of each level is labelled on `err`; info and debug only with `verbose`.
local LABELS = { error = "error", warn = "warning", info = "info", debug = "debug" }
local QUIET_LEVELS = { info = true, debug = true }
local LABEL_COLOURS = { error = "31", warning = "33", info = "36", debug = "2" }

--- Report something else: a table such as {level = "warn", message = "..."}. JSON: written as an event
--- ("message" unless tbl.event names another) with the current phase. Otherwise warnings and errors are
--- printed on `err` as `ferry: warning: <message>`, and with `verbose` info and debug messages as well
--- (`ferry: info: ...`, `ferry: debug: ...`).
---@param tbl table
function Progress:event(tbl)
  self:check_open("event")
  if type(tbl) ~= "table" then error("progress:event: expected a table, got " .. type(tbl), 2) end
  if self.json then
    local event = {}
    for k, v in pairs(tbl) do event[k] = v end
    event.event = event.event or "message"
    event.phase = event.phase or self.phase_name
    self:emit(event)
    return
  end
  local label = LABELS[tbl.level]
  if not label or (QUIET_LEVELS[tbl.level] and not self.verbose) then return end
  local message = tbl.message ~= nil and tostring(tbl.message) or M.encode(tbl)
  local redrawn = self.tty and self.drawn > 0
  if self.tty then self:clear_bar() end
  self.err:write("ferry: ", paint(self, LABEL_COLOURS[label], label), ": ", printable.text(self.redact(message)),
    "\n")
  if redrawn then self:draw(false) end
end

--- End the current phase and, with JSON, write the result object as the last line.
---@param result table|nil
function Progress:finish(result)
  self:check_open("finish")
  self:end_phase()
  self.finished = true
  if self.json then
    local event = {}
    for k, v in pairs(result or {}) do event[k] = v end
    event.event = "result"
    self:emit(event)
  end
end

--- A progress reporter. opts: json, tty (booleans), out (default io.stdout; JSON lines), err (default
--- io.stderr; bar and warnings), verbose (print info and debug messages on err too), redact (string ->
--- string), no_color (default: NO_COLOR is set; colour is only ever written with tty),
--- now (seconds, default a monotonic clock), interval (seconds between updates of a phase, 0.1).
---@param opts table|nil
function M.new(opts)
  opts = opts or {}
  local no_color = opts.no_color
  if no_color == nil then
    local env = os.getenv("NO_COLOR")
    no_color = env ~= nil and env ~= ""
  end
  local redact_fn = opts.redact or function(s) return s end
  local self = setmetatable({
    json = opts.json and true or false,
    tty = opts.tty and true or false,
    verbose = opts.verbose and true or false,
    out = opts.out or io.stdout,
    err = opts.err or io.stderr,
    redact = redact_fn,
    color = opts.tty and not no_color or false,
    now = opts.now or default_now(),
    interval = opts.interval or 0.1,
    drawn = 0,
    finished = false,
  }, Progress)
  self.redact_deep = function(value) return redact.deep(value, redact_fn) end
  return self
end

--- Whether the reporter prepare and restore use without opts.progress (M.QUIET) passes their info and debug
--- messages on to ferry.log (`ferry repl -v`, `prepare --many -v`); warnings and errors always go there.
M.verbose = false

--- The reporter prepare and restore use without opts.progress: no progress (their warnings go to ferry.log,
--- and their info and debug messages too when M.verbose is set).
M.QUIET = {}
function M.QUIET.phase() end
function M.QUIET.advance() end
function M.QUIET.set_total() end
function M.QUIET.event(_, tbl)
  if M.verbose and type(tbl) == "table" and QUIET_LEVELS[tbl.level] and tbl.message ~= nil then
    require("ferry.core").log(tbl.level, printable.text(tostring(tbl.message)))
  end
end
function M.QUIET.status() end
function M.QUIET.tick() end

return M
