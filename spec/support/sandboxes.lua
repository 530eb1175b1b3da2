--- The sandbox providers the specs run against, each in fresh temp dirs.
-- box = sandboxes.make(label): label is "local" (a temp dir on this host), "bwrap" (bwrap:TMPDIR), "cmd"
-- (cmd:env FERRY_VIA_CMD=1, commands run on this host through a prefix) or "busybox" (cmd:env PATH=DIR where
-- DIR holds only busybox applets, so the remote commands are busybox's, not GNU coreutils).
-- box.provider is the provider string, box.root a fresh empty dir inside the sandbox, box.host_root the same
-- dir seen from the host, box:open(opts) opens it (asserting), box:cleanup() removes the temp dirs.
-- sandboxes.counting(label) is the same through exec_counter.sh: box:count() is the number of commands run.
-- sandboxes.BWRAP_WORKS says whether bwrap can run here.
local helpers = require "support.helpers"
local ferry = require "ferry"

local M = {}

M.LABELS = { "local", "bwrap", "cmd" }

-- Whether bubblewrap can run here (it cannot in some containers), probed once.
local bwrap_probe = ferry.proc.run { argv = { "bwrap", "--ro-bind", "/", "/", "true" } }
M.BWRAP_WORKS = bwrap_probe ~= nil and bwrap_probe.code == 0

local COUNTER = helpers.root .. "/spec/support/exec_counter.sh"

local busybox_dir

--- A dir of symlinks to busybox, one per applet (made once per run).
function M.busybox_path()
  if busybox_dir then return busybox_dir end
  busybox_dir = helpers.tmpdir()
  assert(os.execute("for a in $(busybox --list); do ln -s \"$(command -v busybox)\" " .. busybox_dir
    .. "/$a; done"))
  return busybox_dir
end

local Box = {}
Box.__index = Box

function Box:open(opts)
  return assert(ferry.open(self.provider, opts))
end

function Box:cleanup()
  helpers.rmtree(self.tmp)
end

--- Number of commands run through a counting box since it was made (or since reset()).
function Box:count()
  local f = io.open(self.count_file, "rb")
  if not f then return 0 end
  local n = 0
  for _ in f:lines() do n = n + 1 end
  f:close()
  return n
end

function Box:reset()
  os.remove(self.count_file)
end

local function prefix_for(label, tmp)
  if label == "local" then return "local", tmp .. "/work" end
  if label == "bwrap" then return "bwrap:" .. tmp .. "/box", "/sandbox/workspace", tmp .. "/box/workspace" end
  if label == "cmd" then return "cmd:env FERRY_VIA_CMD=1", tmp .. "/work" end
  if label == "busybox" then return "cmd:env PATH=" .. M.busybox_path(), tmp .. "/work" end
  error("unknown sandbox label " .. tostring(label))
end

--- A fresh sandbox of the given kind.
---@param label string "local"|"bwrap"|"cmd"|"busybox"
function M.make(label)
  local tmp = helpers.tmpdir()
  local provider, root, host_root = prefix_for(label, tmp)
  assert(os.execute("mkdir -p '" .. (host_root or root) .. "'"))
  return setmetatable({ label = label, tmp = tmp, provider = provider, root = root,
    host_root = host_root or root }, Box)
end

--- A fresh sandbox whose commands all go through exec_counter.sh: a cmd: provider wrapping the label's
--- command ("cmd" or "busybox"; "local" counts plain host commands).
---@param label string|nil
function M.counting(label)
  label = label or "cmd"
  local box = M.make(label == "local" and "cmd" or label)
  box.count_file = box.tmp .. "/count"
  local inner = box.provider:match("^cmd:(.*)$") or "env"
  box.provider = "cmd:sh " .. COUNTER .. " " .. box.count_file .. " " .. inner
  return box
end

return M
