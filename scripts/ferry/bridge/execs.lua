--- ferry.bridge.execs: one command run by the bridge server for a client (README "Bridge", "Exec"). It starts
-- when the exec is created; stdin arrives as a sequence of chunk requests and is fed as it comes; output is
-- queued as frames for the one output stream, whose writer is flow-controlled by h2o: when the client reads
-- slower than the command writes, the command's pipes are paused, so memory stays bounded.
local core = require "ferry.core"
local ferry = require "ferry"
local task = require "ferry.task"
local protocol = require "ferry.bridge.protocol"
local leases = require "ferry.bridge.leases"

local M = {}

M.KEEPALIVE_MS = 1000        -- an idle stream carries a keepalive frame this often (finds a vanished client)
M.ATTACH_TIMEOUT_MS = 30000  -- an exec whose output stream never comes is killed after this
M.HOLD_MS = 30000            -- a stdin chunk ahead of its turn waits this long for its predecessors
local HIGH_WATER = 1024 * 1024 -- output queued beyond this pauses the command's pipes
local LOW_WATER = 256 * 1024
local WRITE_BATCH = 256 * 1024 -- frames written to the client at once, at most
local STDIN_QUEUE = 2 * 1024 * 1024 -- stdin received but not yet written to the command, at most

local Exec = {}
Exec.__index = Exec

-- Wake what waits on the exec in `field` (writer_waiters: the output writer, chunk_waiters: stdin chunk
-- requests, reader_waiters: the stdin reader). A woken task may wait again: it joins a fresh list.
local function wake_all(exec, field)
  local list = exec[field]
  if #list == 0 then return end
  exec[field] = {}
  for _, wake in ipairs(list) do wake() end
end

function Exec:push(kind, payload)
  self.queue[#self.queue + 1] = { kind, payload }
  self.queued = self.queued + #payload
  self.bytes_out = self.bytes_out + #payload
  if self.queued > HIGH_WATER and self.handle and not self.paused then
    self.paused = true
    self.handle:pause_output()
  end
  wake_all(self, "writer_waiters")
end

function Exec:queued_stdin()
  local n = 0
  for _, c in ipairs(self.stdin_queue) do n = n + #c end
  return n
end

-- The stdin reader the command's feeder calls: the next chunk, waiting for its request; nil at EOF.
function Exec:read_stdin()
  while true do
    local chunk = table.remove(self.stdin_queue, 1)
    if chunk then
      wake_all(self, "chunk_waiters")
      return chunk
    end
    if self.stdin_eof or self.finished then return nil end
    task.await(function(wake) self.reader_waiters[#self.reader_waiters + 1] = wake end)
  end
end

-- Stop a running command: close its stdin, which its wrapper in the sandbox (or the session's shell) takes as
-- the order to stop it (TERM to its process group, KILL after the grace); SIGKILL to the local process only
-- when that has not ended it STOP_BACKSTOP_MS later. A kill alone would miss the command: it runs in a
-- process group of its own inside the sandbox.
local STOP_BACKSTOP_MS = 5000
local function stop(self, handle)
  handle:close_stdin()
  self.backstop = self.backstop or core.timer(STOP_BACKSTOP_MS, function() pcall(handle.kill, handle, "SIGKILL") end)
end

--- Kill the command (the client went away, the lease ended, the client asked).
function Exec:kill(why)
  if self.finished then return end
  self.kill_reason = self.kill_reason or why
  if self.handle then stop(self, self.handle) end
  self.stdin_eof = true
  wake_all(self, "reader_waiters")
end

-- Run the command to its end (a task started with the exec).
function Exec:run(live)
  local sb, is_session = leases.pick(live, self.spec.has_stdin)
  local reader = self.spec.has_stdin and function() return self:read_stdin() end or nil
  local res, err = sb:exec(self.spec.argv or self.spec.script, {
    stdin = reader, env = self.spec.env, cwd = self.spec.cwd, timeout_ms = self.spec.timeout_ms,
    kill_grace_ms = self.spec.kill_grace_ms,
    on_spawn = function(_, _, handle)
      self.handle = handle
      if self.kill_reason then stop(self, handle) end
      if self.paused then handle:pause_output() end
    end,
    on_stdout = function(c) self:push(protocol.STDOUT, c) end,
    on_stderr = function(c) self:push(protocol.STDERR, c) end,
  })
  if is_session then live.session_busy = false end
  if self.paused and self.handle then self.handle:resume_output() end
  self.handle = nil
  if self.backstop then self.backstop:stop() end
  if res then
    self.result = { code = res.code, signal = res.signal or protocol.null, timed_out = res.timed_out and true or false,
      duration_ms = res.duration_ms }
  else
    self.result = { error = tostring(err), code = protocol.null, signal = protocol.null, timed_out = false }
  end
  if self.kill_reason then self.result.error = self.kill_reason end
  self.finished = true
  live.execs[self] = nil
  wake_all(self, "writer_waiters")
  wake_all(self, "chunk_waiters")
  wake_all(self, "reader_waiters")
  wake_all(self, "order_waiters")
  if self.on_finish then self.on_finish(self) end
end

--- Start a command for a lease. spec: script or argv, env, cwd, timeout_ms, kill_grace_ms, has_stdin.
--- chain: the hex signature of the creating request (the first stdin chunk is chained to it).
---@return table exec
function M.start(live, spec, chain)
  local exec = setmetatable({ id = protocol.new_id(12), spec = spec, queue = {}, queued = 0, bytes_out = 0,
    bytes_in = 0, stdin_queue = {}, next_seq = 0, chain = chain, holding = {}, writer_waiters = {},
    chunk_waiters = {}, reader_waiters = {}, order_waiters = {}, started_at = core.time_ms() }, Exec)
  live.execs[exec] = true
  exec.attach_timer = core.timer(M.ATTACH_TIMEOUT_MS, function()
    if not exec.attached then exec:kill("no client read the output") end
  end)
  ferry.spawn(function() exec:run(live) end)
  return exec
end

-- Wait until chunk `seq` is the next one (its predecessors were taken), the exec finished, or HOLD_MS passed.
function Exec:wait_turn(seq)
  local deadline = core.now_ms() + M.HOLD_MS
  while self.next_seq ~= seq and not self.finished and core.now_ms() < deadline do
    local timer
    task.await(function(wake)
      self.order_waiters[#self.order_waiters + 1] = wake
      timer = core.timer(math.max(1, math.floor(deadline - core.now_ms())), wake)
    end)
    timer:stop()
  end
end

--- Take one stdin chunk request. Chunks may arrive out of order within protocol.STDIN_WINDOW: one ahead of
--- its turn waits (at most HOLD_MS) for its predecessors, then must be chained to the one before it
--- (`chain`: the hex signature it was signed with). It is queued for the command, and the call returns once
--- the queue is back within its bound (or the command ended). Returns status, body table.
---@param seq integer
---@param eof boolean
---@param body string
---@param sig_hex string  the chunk request's signature (the next chunk is chained to it)
---@param chain string  the signature the chunk says it follows
function Exec:stdin_chunk(seq, eof, body, sig_hex, chain)
  if not self.spec.has_stdin then
    return 409, { error = "no_stdin", message = "this exec was created without stdin" }
  end
  if seq < self.next_seq or seq >= self.next_seq + protocol.STDIN_WINDOW or self.holding[seq] then
    return 409, { error = "bad_sequence", message = string.format("expected stdin chunk %d (or up to %d ahead), got %d",
      self.next_seq, protocol.STDIN_WINDOW - 1, seq) }
  end
  if seq > self.next_seq then
    self.holding[seq] = true
    self:wait_turn(seq)
    self.holding[seq] = nil
    if self.next_seq ~= seq then
      if self.finished then return 200, { accepted = false, finished = true } end
      return 409, { error = "bad_sequence", message = string.format("stdin chunk %d came, chunk %d never did", seq,
        self.next_seq) }
    end
  end
  if chain ~= self.chain then
    return 401, { error = "bad_signature", message = string.format("stdin chunk %d is not chained to chunk %d", seq,
      seq - 1) }
  end
  self.next_seq, self.chain = seq + 1, sig_hex
  local taken = not (self.finished or self.stdin_eof)
  if taken then
    self.bytes_in = self.bytes_in + #body
    if #body > 0 then self.stdin_queue[#self.stdin_queue + 1] = body end
    if eof then self.stdin_eof = true end
  end
  wake_all(self, "order_waiters") -- (a woken chunk runs now: this one is queued before it)
  if not taken then return 200, { accepted = false, finished = self.finished } end
  wake_all(self, "reader_waiters")
  -- answered once the queue is back within its bound: the command holds at most STDIN_QUEUE bytes not yet
  -- written (plus the pipe's, and the chunks of the window), however fast the client sends
  while self:queued_stdin() > STDIN_QUEUE and not self.finished do
    task.await(function(wake) self.chunk_waiters[#self.chunk_waiters + 1] = wake end)
  end
  return 200, { accepted = not (self.finished and #self.stdin_queue > 0), received = #body }
end

-- Frames from the queue, up to WRITE_BATCH bytes, as one string.
function Exec:take_frames(writer)
  local parts, size = {}, 0
  while #self.queue > 0 and size < WRITE_BATCH do
    local item = table.remove(self.queue, 1)
    self.queued = self.queued - #item[2]
    local frame = writer:frame(item[1], item[2])
    parts[#parts + 1] = frame
    size = size + #frame
  end
  if self.paused and self.queued < LOW_WATER and self.handle then
    self.paused = false
    self.handle:resume_output()
  end
  return table.concat(parts)
end

-- Wait until there is something to send or the keepalive is due.
function Exec:wait_output()
  local timer
  task.await(function(wake)
    self.writer_waiters[#self.writer_waiters + 1] = wake
    timer = core.timer(M.KEEPALIVE_MS, wake)
  end)
  timer:stop()
end

--- Stream the output to `res` (an ferry.http response) as frames chained on `seed` (the raw signature of
--- the output request): stdout/stderr as they come, a keepalive when idle, the exit frame last. A client
--- that goes away kills the command. Returns true once the exit frame was written.
function Exec:stream(res, secret, seed)
  self.attached = true
  self.attach_timer:stop()
  res:on_close(function() self:kill("the client went away") end)
  res:start(200, { ["content-type"] = "application/x-ferry-frames", ["cache-control"] = "no-store" })
  local writer = protocol.frame_writer(secret, seed)
  while true do
    local data
    if #self.queue > 0 then
      data = self:take_frames(writer)
    elseif self.finished then
      local ok = res:write(writer:frame(protocol.EXIT, protocol.encode(self.result)))
      if ok then res:finish() end
      self.streamed = true
      return ok ~= nil
    else
      self:wait_output()
      if #self.queue == 0 and not self.finished then data = writer:frame(protocol.KEEPALIVE, "") end
    end
    if data and not res:write(data) then
      self:kill("the client went away")
      self.streamed = true
      return false
    end
  end
end

return M
