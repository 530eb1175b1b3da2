--- Provider `cmd:ARGV...`: the words after `cmd:` are a command prefix; ferry runs `ARGV... sh -c SCRIPT`
-- on this host with stdin and stdout piped (e.g. `cmd:docker exec -i box`, `cmd:env PATH=/opt/bin:/bin`).
-- The words are split as a POSIX shell splits them (quotes and backslashes), without any expansion.
local core = require "ferry.core"
local util = require "ferry.provider_util"

local function check_in_terminal(p)
  return string.format("check that `%s sh -c true` works in a terminal", core.sh_join(p.prefix))
end

return util.prefix_provider {
  scheme = "cmd",
  usage = "cmd:ARGV...",
  help = "runs ARGV... sh -c SCRIPT on this host (e.g. cmd:docker exec -i BOX)",
  target = function(arg)
    local words, err = util.split_words(arg)
    if not words then return nil, err .. " in the command prefix" end
    if #words == 0 then return nil, "expected a command prefix after cmd:, e.g. cmd:docker exec -i BOX" end
    return { prefix = words }
  end,
  explain = {
    not_started = function(p, err)
      return string.format("cannot run '%s': %s; the words after cmd: must start with an installed program "
        .. "(e.g. cmd:docker exec -i BOX)", p.prefix[1], err)
    end,
    timed_out = function(p, seconds)
      return string.format("the sandbox did not answer within %d s; %s", seconds, check_in_terminal(p))
    end,
    unreachable = function(p, res)
      return string.format("the sandbox is unreachable: a probe exited with code %s%s; %s",
        tostring(res.code or res.signal), util.stderr_note(res), check_in_terminal(p))
    end,
  },
}
