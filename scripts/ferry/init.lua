--- ferry: the public Lua API (README "Lua API").
local core = require "ferry.core"
local task = require "ferry.task"

local M = {}

M.version = core.version
M.core = core

--- Processes: ferry.proc.run(opts) -> result | nil, err, code
M.proc = require "ferry.proc"

--- base64 (RFC 4648, padded): encode(s), decode(s) -> s | nil, err, code; encoder() and decoder() stream.
M.b64 = {
  encode = core.b64_encode,
  decode = core.b64_decode,
  encoder = core.b64_encoder,
  decoder = core.b64_decoder,
}

--- POSIX shell quoting: quote(s), join(argv).
M.sh = { quote = core.sh_quote, join = core.sh_join }

--- SHA-256: sha256(s) -> hex, new() -> hasher, sha256_file(path) -> hex | nil, err, code.
M.hash = { sha256 = core.sha256, new = core.sha256_new, sha256_file = core.sha256_file }

--- Tasks: spawn(fn, ...) -> task; wait(task | tasks); sleep(ms); run() drives the loop until all finish.
M.spawn = task.spawn
M.wait = task.wait
M.sleep = task.sleep
M.run = task.drain

--- Log a line through the host's log callback (or stderr). level: debug, info, warn, error.
function M.log(level, message)
  core.log(level, message)
end

--- Sandboxes: open(provider_string[, opts]) -> sandbox (see ferry.client); policy files: ferry.policy.
M.open = require("ferry.client").open
M.policy = require "ferry.policy"

--- Managed runtime: prepare(opts) -> result (see ferry.prepare) and restore(opts) -> result (see
--- ferry.restore), loaded on first use.
M.prepare = function(opts) return require("ferry.prepare").prepare(opts) end
M.restore = function(opts) return require("ferry.restore").restore(opts) end

return M
