--- Provider `docker:CONTAINER`: commands run in a running container with `docker exec -i CONTAINER sh -c
-- SCRIPT` (no tty, so stdin and stdout are 8-bit clean). `engine(program)` makes the same provider for a
-- docker-compatible CLI (providers/podman.lua).
local util = require "ferry.provider_util"

local PROBE_TIMEOUT_MS = 30000

--- A provider module for the docker-compatible CLI `program` ("docker", "podman"): usage, help, open, engine.
---@param program string
---@return table
local function engine(program)
  local E = {}
  E.usage = program .. ":CONTAINER"
  E.help = "commands run in a running container with " .. program .. " exec -i CONTAINER sh -c SCRIPT"

  local Container = {}
  Container.__index = Container

  --- The argv that runs `script` with sh in the container.
  ---@param script string
  ---@return string[]
  function Container:command(script)
    return { program, "exec", "-i", self.container, "sh", "-c", script }
  end

  --- Nothing to release: every command is a process of its own.
  function Container.close() end

  -- One command in the container: tells a missing CLI, a stopped container or a daemon that is not running
  -- from a working sandbox.
  local function probe(p, opts)
    local timeout = opts.probe_timeout_ms or PROBE_TIMEOUT_MS
    local res, err, code = util.probe(p, opts, timeout)
    if not res then return util.start_error(p.name, err, code, { program = program }) end
    if res.timed_out then
      return nil, string.format("%s: the container did not answer within %d s", p.name, timeout // 1000),
        "ETIMEDOUT"
    end
    if not util.answered(res) then
      return nil, string.format("%s: cannot run a command in container %s: %s; check that it is running (%s ps)",
        p.name, p.container, util.why(res), program), "EHOSTUNREACH"
    end
    return true
  end

  --- Open the provider: check the container name and, unless opts.probe == false, run one probe command.
  ---@param arg string  the container name or id
  ---@param opts table|nil  probe (bool), probe_timeout_ms, on_exec
  ---@return table|nil provider, string|nil err, string|nil code
  function E.open(arg, opts)
    opts = opts or {}
    local name = program .. ":" .. (arg or "")
    if arg == nil or arg == "" then
      return nil, name .. ": expected a container name or id, e.g. " .. program .. ":box", "EINVAL"
    end
    if not arg:match("^[%w][%w_.%-]*$") then
      return nil, name .. ": '" .. arg .. "' is not a container name or id", "EINVAL"
    end
    local p = setmetatable({
      name = name,
      container = arg,
      caps = { stdin = true, binary = true },
      default_remote_dir = nil,
      scratch_dir = "/tmp",
    }, Container)
    return util.checked(p, opts, probe)
  end

  E.engine = engine
  return E
end

return engine("docker")
