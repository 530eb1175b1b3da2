--- ferry.transfer: how the client's scripts and bytes travel through one sandbox command: the prelude every
-- script starts with (cwd), the framing that counts the bytes a script read or wrote
-- and reports them in a status line after its output ("::ferry:: rc=N\nCOUNT"), the sink that strips that
-- line off the output (decoding base64 on the way when the channel is not 8-bit clean), and the readers that
-- feed stdin (a string, pieces of a fixed size, base64 lines, counted).
local core = require "ferry.core"

local M = {}

local HOLD = 512 -- bytes of stdout held back while streaming: the status line is shorter
local MARK = "::ferry:: "

local q = core.sh_quote

--- A path as one shell word no command mistakes for an option (relative paths are relative to /).
---@param path string
---@return string
function M.word(path)
  if path:sub(1, 1) ~= "/" then path = "./" .. path end
  return q(path)
end

--- The line every script starts with: cd to opts.cwd (default /). The environment is not part of a script: it
--- travels on the command's stdin (ferry.channel) or through the session.
---@param opts table
---@return string
function M.prelude(opts)
  return "cd " .. M.word(opts.cwd or "/") .. " || exit 1\n"
end

local STATUS = "printf '" .. MARK .. "%s\\n' \"$ferry_st\"\n"
  .. 'ferry_rc=${ferry_st#rc=} ; ferry_rc=${ferry_rc%%[!0-9]*}\n'

--- `script` reading `decode`d stdin through a counter, then the status line; "$ferry_rc" holds the script's
--- exit code. fd 3 is the real stdout, fd 4 the captured status.
---@param script string
---@param decode string  "" or a command and a pipe ("base64 -d | ")
---@return string
function M.wrap_in(script, decode)
  return "{ ferry_st=$( { { " .. decode .. "tee /dev/fd/5 | (\n" .. script
    .. '\n) 5>&- 4>&- >&3 3>&- ; echo "rc=$?" >&4 ; } 5>&1 | wc -c ; } 4>&1 ) ; } 3>&1\n' .. STATUS
end

--- `script` whose stdout goes through a counter (then `encode`) to the real stdout, then the status line.
---@param script string
---@param encode string  "" or a pipe and a command (" | base64")
---@return string
function M.wrap_out(script, encode)
  return "{ ferry_st=$( { { { (\n" .. script
    .. '\n) 3>&- 4>&- 5>&- ; echo "rc=$?" >&4 ; } | tee /dev/fd/5' .. encode
    .. " >&3 3>&- ; } 5>&1 | wc -c ; } 4>&1 ) ; } 3>&1\n" .. STATUS
end

local function parse_status(text)
  local rc, n = text:match("^" .. MARK .. "rc=(%d+)%s+(%d+)%s*$")
  return tonumber(rc), tonumber(n)
end

--- Receives a command's stdout: everything before the status line goes to `emit` (decoded from base64 when
--- `b64`), the status line is kept. sink.push(chunk) takes output; sink.finish() returns rc, count from the
--- status line (nil when there is none); sink.bytes counts what was emitted; sink.err holds the first error
--- (bad base64, or one raised by `emit`).
---@param emit fun(data: string)
---@param b64 boolean
---@return table
function M.status_sink(emit, b64)
  local held = ""
  local decoder = b64 and core.b64_decoder()
  local sink = { bytes = 0 }
  local function deliver(data)
    if sink.err or data == "" then return end
    if decoder then
      local decoded, err = decoder:update(data)
      if not decoded then
        sink.err = "bad base64 from the sandbox: " .. tostring(err)
        return
      end
      data = decoded
    end
    sink.bytes = sink.bytes + #data
    local ok, err = pcall(emit, data)
    if not ok then sink.err = tostring(err) end
  end
  function sink.push(chunk)
    held = held .. chunk
    if #held > 2 * HOLD then
      deliver(held:sub(1, -HOLD - 1))
      held = held:sub(-HOLD)
    end
  end
  function sink.finish()
    local at, from = nil, 1
    while true do
      local s = held:find(MARK, from, true)
      if not s then break end
      at, from = s, s + 1
    end
    if not at then
      deliver(held)
      return nil
    end
    deliver(held:sub(1, at - 1))
    if decoder and not sink.err then
      local ok, err = decoder:finish()
      if not ok then sink.err = "bad base64 from the sandbox: " .. tostring(err) end
    end
    return parse_status(held:sub(at))
  end
  return sink
end

--- True for what pipe_in and write take as data: a reader function or a string.
function M.is_reader(v)
  return type(v) == "function" or type(v) == "string"
end

--- A reader returning `s` once, then nil.
---@param s string
---@return function
function M.string_reader(s)
  local done = false
  return function()
    if done then return nil end
    done = true
    return s
  end
end

--- Pieces of exactly `size` bytes (the last one shorter) from a reader.
---@param read function
---@param size integer
---@return function
function M.rechunk(read, size)
  local buf, eof = "", false
  return function()
    while not eof and #buf < size do
      local c = read()
      if c == nil then eof = true else buf = buf .. c end
    end
    if buf == "" then return nil end
    local piece = buf:sub(1, size)
    buf = buf:sub(size + 1)
    return piece
  end
end

--- base64 of a reader, in lines of 76 characters.
---@param read function
---@return function
function M.b64_lines(read)
  local encoder, done = core.b64_encoder { wrap = 76 }, false
  return function()
    if done then return nil end
    local chunk = read()
    if chunk == nil then
      done = true
      return encoder:finish()
    end
    return encoder:update(chunk)
  end
end

--- A reader counting what it passes on: c.read() reads, c.n is the byte count, on_progress(c.n) is called
--- after each chunk.
---@param read function
---@param on_progress function|nil
---@return table
function M.counting(read, on_progress)
  local c = { n = 0 }
  function c.read()
    local chunk = read()
    if chunk and #chunk > 0 then
      c.n = c.n + #chunk
      if on_progress then on_progress(c.n) end
    end
    return chunk
  end
  return c
end

--- A reader for a `read` function that may raise (a core.tar_writer's read): a raised error ends the
--- stream and is kept in reader.failure, for the caller to report as the cause of what fails next.
---@param read function
---@return table  {read = function, failure = string|nil}
function M.guarded(read)
  local reader = {}
  function reader.read()
    if reader.failure then return nil end
    local ok, chunk = pcall(read)
    if ok then return chunk end
    reader.failure = tostring(chunk)
    return nil
  end
  return reader
end

return M
