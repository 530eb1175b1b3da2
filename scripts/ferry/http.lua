--- ferry.http: an HTTP client (libcurl) and an HTTP/1.1 server (libh2o), both on the engine's libuv loop.
-- Calls look synchronous: inside a task they yield it, outside one they run the loop (like ferry.proc.run).
local core = require "ferry.core"
local task = require "ferry.task"

local M = {}

--- Send one request and wait for the whole response.
--- opts: url, method (default GET, or POST with a body), headers (list of "Name: value"), body (string),
--- timeout_ms, connect_timeout_ms, stall_timeout_ms (fail when nothing moved for that long), cainfo, max_body,
--- on_headers(status, headers), on_data(chunk) (the body
--- as it arrives: then res.body is nil; must not block), on_request(handle) (handle:abort(why) ends the
--- request at once: request() then returns nil, why or "aborted", "ECANCELED").
--- Returns {status, headers = {lowercase name = value}, body} or nil, message, code (ECONNREFUSED,
--- ETIMEDOUT, ECONNRESET, ETLS, EFBIG, EIO, ...).
---@param opts table
---@return table|nil res, string|nil err, string|nil code
function M.request(opts)
  if type(opts) ~= "table" then error("http.request: expected an options table, got " .. type(opts), 2) end
  return task.block(function()
    local res = task.await(function(wake)
      local req, err, code = core.http_request(opts, wake)
      if not req then return wake({ error = err, code = code }) end
      if opts.on_request then
        opts.on_request({ abort = function(_, why)
          req:abort()
          wake({ error = why or "aborted", code = "ECANCELED" })
        end })
      end
    end)
    if res.error then return nil, res.error, res.code end
    return res
  end)
end

--- Close the client's kept-alive connections when no request is in flight (they are reused otherwise).
--- Returns whether it did.
---@return boolean
function M.close_idle()
  return core.http_close_idle()
end

-- The response handle a request handler gets: blocking write, deferred close notification.
local Response = {}
Response.__index = Response

--- Send the whole response. headers: {name = value}.
function Response:respond(status, headers, body)
  return self.raw:respond(status, headers or {}, body or "")
end

--- Start a streamed response (chunked).
function Response:start(status, headers)
  return self.raw:start(status, headers or {})
end

--- Write one chunk of a started response; returns once h2o wrote it (flow control), or nil, "closed".
function Response:write(chunk)
  local err = task.await(function(wake)
    local ok, werr = self.raw:write(chunk, function(e)
      -- "closed" arrives from inside h2o's teardown of the connection: resume the writer later
      if e then core.timer(0, function() wake(e) end) else wake(nil) end
    end)
    if not ok then wake(werr) end
  end)
  if err then return nil, err, "EPIPE" end
  return true
end

--- End a started response.
function Response:finish()
  return self.raw:finish()
end

--- fn() runs once (in a later loop turn) if the client goes away before the response ended.
function Response:on_close(fn)
  self.raw:on_close(function() core.timer(0, fn) end)
end

--- Whether the client went away.
function Response:closed()
  return self.raw.closed
end

--- Serve HTTP on the loop: `handler(req, res)` runs as a task for each request. req: method, path (with the
--- query, as sent), host, headers (lowercase names), header_bytes, body. res: respond(status, headers, body),
--- start(status, headers), write(chunk) (blocks until written), finish(), on_close(fn), closed().
--- A handler that raises gets a 500 (when nothing was sent yet) and the error is logged.
--- opts: host, port (0 = any free one), tls_cert, tls_key, max_body, idle_timeout_ms, max_connections.
--- Returns the server (server.port, server:connections(), server:close()); keep a reference to it: a
--- collected server stops listening.
---@param opts table
---@param handler fun(req: table, res: table)
---@return userdata|nil server, string|nil err, string|nil code
function M.listen(opts, handler)
  if type(handler) ~= "function" then error("http.listen: expected a handler function", 2) end
  return core.http_listen(opts, function(req, raw)
    local res = setmetatable({ raw = raw }, Response)
    task.spawn(function()
      local ok, err = xpcall(handler, debug.traceback, req, res)
      if not ok then
        core.log("error", "http: " .. req.method .. " " .. req.path .. ": " .. tostring(err))
        if not pcall(raw.respond, raw, 500, { ["content-type"] = "text/plain" }, "internal error\n") then
          pcall(raw.finish, raw) -- a stream already started: end it (its reader sees it incomplete)
        end
      end
    end)
  end)
end

return M
