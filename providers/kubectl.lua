--- Provider `kubectl:[NAMESPACE/]POD[:CONTAINER][?context=CTX]`: commands run in a pod with
-- `kubectl [--context CTX] exec -i [-n NAMESPACE] POD [-c CONTAINER] -- sh -c SCRIPT` (no tty, so stdin and
-- stdout are 8-bit clean). Without a namespace or context, kubectl's current ones apply.
local util = require "ferry.provider_util"

local M = {}

M.usage = "kubectl:[NAMESPACE/]POD[:CONTAINER][?context=CTX]"
M.help = "commands run in a pod with kubectl exec -i (optional namespace, container, ?context=)"

local PROBE_TIMEOUT_MS = 60000

-- Kubernetes object names: lower-case letters, digits, '-' and '.', starting with a letter or digit.
local function k8s_name(s)
  return s ~= nil and s:match("^[%l%d][%l%d%.%-]*$") ~= nil
end

--- Parse the text after "kubectl:". Returns {namespace, pod, container, context} or nil and a message.
---@param arg string
---@return table|nil target, string|nil err
function M.parse(arg)
  local target, query = (arg or ""):match("^([^?]*)%??(.*)$")
  local t = {}
  for pair in query:gmatch("[^&]+") do
    local key, value = pair:match("^([^=]*)=(.*)$")
    if key ~= "context" then
      return nil, "the only query key is context (?context=CTX), got '" .. pair .. "'"
    end
    t.context = util.url_decode(value)
    if t.context == "" or t.context:find("^%-") or t.context:find("%c") then
      return nil, "'" .. t.context .. "' is not a context name"
    end
  end
  local ns, rest = target:match("^([^/]*)/(.*)$")
  t.namespace = ns
  t.pod, t.container = (rest or target):match("^([^:]*):?(.*)$")
  if t.container == "" then t.container = nil end
  if ns and not k8s_name(ns) then return nil, "'" .. ns .. "' is not a namespace name" end
  if t.pod == "" then return nil, "expected a pod name, e.g. kubectl:default/my-pod" end
  if not k8s_name(t.pod) then return nil, "'" .. t.pod .. "' is not a pod name" end
  if t.container and not k8s_name(t.container) then return nil, "'" .. t.container .. "' is not a container name" end
  return t
end

local Pod = {}
Pod.__index = Pod

--- The argv that runs `script` with sh in the pod.
---@param script string
---@return string[]
function Pod:command(script)
  return util.with(self.prefix, "sh", "-c", script)
end

--- Nothing to release: every command is a process of its own.
function Pod.close() end

local function prefix_of(t)
  local argv = { "kubectl" }
  if t.context then table.move({ "--context", t.context }, 1, 2, #argv + 1, argv) end
  table.move({ "exec", "-i" }, 1, 2, #argv + 1, argv)
  if t.namespace then table.move({ "-n", t.namespace }, 1, 2, #argv + 1, argv) end
  argv[#argv + 1] = t.pod
  if t.container then table.move({ "-c", t.container }, 1, 2, #argv + 1, argv) end
  argv[#argv + 1] = "--"
  return argv
end

-- One command in the pod: tells a missing kubectl, an unknown pod or an unreachable cluster from a working one.
local function probe(p, opts)
  local timeout = opts.probe_timeout_ms or PROBE_TIMEOUT_MS
  local res, err, code = util.probe(p, opts, timeout)
  if not res then return util.start_error(p.name, err, code, { program = "kubectl" }) end
  if res.timed_out then
    return nil, string.format("%s: the pod did not answer within %d s", p.name, timeout // 1000), "ETIMEDOUT"
  end
  if not util.answered(res) then
    return nil, string.format("%s: cannot run a command in pod %s: %s; check the pod (kubectl get pod%s) and "
      .. "the context", p.name, p.pod, util.why(res), p.namespace and " -n " .. p.namespace or ""), "EHOSTUNREACH"
  end
  return true
end

--- Open the provider: parse the target and, unless opts.probe == false, run one probe command.
---@param arg string  the text after "kubectl:"
---@param opts table|nil  probe (bool), probe_timeout_ms, on_exec
---@return table|nil provider, string|nil err, string|nil code
function M.open(arg, opts)
  opts = opts or {}
  local t, err = M.parse(arg)
  if not t then return nil, "kubectl:" .. (arg or "") .. ": " .. err, "EINVAL" end
  local p = setmetatable({
    name = "kubectl:" .. arg,
    pod = t.pod,
    namespace = t.namespace,
    container = t.container,
    context = t.context,
    prefix = prefix_of(t),
    caps = { stdin = true, binary = true },
    default_remote_dir = nil,
    scratch_dir = "/tmp",
  }, Pod)
  return util.checked(p, opts, probe)
end

return M
