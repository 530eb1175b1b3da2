--- Provider `kubectl:[NAMESPACE/]POD[:CONTAINER][?context=CTX]`: commands run in a pod with
-- `kubectl [--context CTX] exec -i [-n NAMESPACE] POD [-c CONTAINER] -- sh -c SCRIPT` (no tty, so stdin and
-- stdout are 8-bit clean). Without a namespace or context, kubectl's current ones apply.
local util = require "ferry.provider_util"

-- Kubernetes object names: lower-case letters, digits, '-' and '.', starting with a letter or digit.
local function k8s_name(s)
  return s ~= nil and s:match("^[%l%d][%l%d%.%-]*$") ~= nil
end

--- Parse the text after "kubectl:". Returns {namespace, pod, container, context} or nil and a message.
---@param arg string
---@return table|nil target, string|nil err
local function parse(arg)
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

return util.prefix_provider {
  scheme = "kubectl",
  usage = "kubectl:[NAMESPACE/]POD[:CONTAINER][?context=CTX]",
  help = "commands run in a pod with kubectl exec -i (optional namespace, container, ?context=)",
  parse = parse,
  sandbox = "pod",
  probe_timeout_ms = 60000,
  costly = true,
  target = function(arg)
    local t, err = parse(arg)
    if not t then return nil, err end
    t.prefix = prefix_of(t)
    return t
  end,
  explain = {
    -- an unknown pod or an unreachable cluster
    unreachable = function(p, res)
      return string.format("cannot run a command in pod %s: %s; check the pod (kubectl get pod%s) and the context",
        p.pod, util.why(res), p.namespace and " -n " .. p.namespace or "")
    end,
  },
}
