--- `make bench`: every benchmark side by side in one run, with ratios.
package.path = "spec/?.lua;" .. package.path

local function machine()
  local f = io.popen("uname -srm; nproc; grep -m1 'model name' /proc/cpuinfo | cut -d: -f2")
  local text = f:read("a")
  f:close()
  return (text:gsub("\n", " | "))
end

print(string.format("ferry bench, %s, %s", os.date("!%Y-%m-%d %H:%M UTC"), machine()))
for _, name in ipairs { "proc", "b64", "transport", "git", "bridge", "tree", "scale" } do
  local ok, mod = pcall(require, "bench." .. name)
  if ok then
    print(string.format("\n== %s ==", name))
    local ran, err = pcall(function() mod.report(mod.run()) end) -- one failing bench does not stop the others
    if not ran then print(string.format("== %s: failed (%s) ==", name, err)) end
  else
    print(string.format("\n== %s: unavailable (%s) ==", name, mod))
  end
end
