--- Benchmark: ferry.b64 encode/decode throughput next to coreutils `base64` on a 64 MiB random buffer.
-- `require("bench.b64").run()` from spec/bench/run.lua, or standalone: `build/ferry run spec/bench/b64.lua`.
-- MB/s are of input consumed (raw bytes for encode, base64 text for decode), MB = 10^6 bytes, wall clock,
-- median of 5 runs after a warm-up run.
local ferry = require "ferry"

local M = {}

local SIZE = 64 * 1024 * 1024
local RUNS = 5
local CHUNK = 1024 * 1024

local function random_bytes(n)
  local f = assert(io.open("/dev/urandom", "rb"))
  local data = f:read(n)
  f:close()
  assert(data and #data == n, "short read from /dev/urandom")
  return data
end

local function median(values)
  table.sort(values)
  return values[(#values + 1) // 2]
end

-- Median wall-clock seconds of fn() over RUNS runs after a warm-up run (the first big allocations
-- of a process fault their pages in); fn's last result is kept for checking.
local function timed(fn)
  local times, result = {}, fn()
  for i = 1, RUNS do
    collectgarbage()
    local t0 = ferry.core.now_ms()
    result = fn()
    times[i] = (ferry.core.now_ms() - t0) / 1000
  end
  return median(times), result
end

local function run_tool(argv, stdin)
  local res, err = ferry.proc.run { argv = argv, stdin = stdin, max_output = 4 * SIZE }
  assert(res, err)
  assert(res.code == 0, table.concat(argv, " ") .. " failed: " .. res.stderr)
  return res.stdout
end

local function split(s, size)
  local chunks = {}
  for i = 1, #s, size do chunks[#chunks + 1] = s:sub(i, i + size - 1) end
  return chunks
end

-- Feed the chunks to a streaming object; the outputs are concatenated only when `keep` says so, since
-- a streaming caller hands each piece on rather than gathering them.
local function stream(obj, chunks, keep)
  local out = {}
  for i, chunk in ipairs(chunks) do
    local piece = assert(obj:update(chunk))
    if keep then out[i] = piece end
  end
  out[#chunks + 1] = assert(obj:finish())
  return keep and table.concat(out)
end

-- One operation: ferry one-shot and streaming (1 MiB chunks), coreutils through a pipe (spawn and transfer included)
-- and coreutils reading a file into /dev/null (its own speed).
local function measure(label, input, expected, ferry_fn, stream_fn, tool_argv, file)
  local row = { op = label, input_bytes = #input }
  local t, out = timed(function() return ferry_fn(input) end)
  assert(out == expected, label .. ": ferry output differs")
  row.ferry = #input / t / 1e6
  local chunks = split(input, CHUNK)
  assert(stream(stream_fn(), chunks, true) == expected, label .. ": ferry stream output differs")
  t = timed(function() return stream(stream_fn(), chunks, false) end)
  row.ferry_stream = #input / t / 1e6
  t, out = timed(function() return run_tool(tool_argv, input) end)
  assert(out == expected, label .. ": coreutils output differs")
  row.coreutils_pipe = #input / t / 1e6
  local shell = table.concat(tool_argv, " ") .. ' < "$1" > /dev/null'
  t = timed(function() return run_tool({ "sh", "-c", shell, "sh", file }) end)
  row.coreutils_file = #input / t / 1e6
  row.ratio = row.ferry / row.coreutils_pipe
  -- The ceiling for a one-shot call: only creating a Lua string of the result's size (fresh memory).
  t = timed(function() return expected:sub(2) end)
  row.result_copy = #input / t / 1e6
  return row
end

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  assert(f:write(data))
  f:close()
end

local function print_table(rows)
  print(string.format("base64, %d MiB random data, median of %d, MB/s of input", SIZE >> 20, RUNS))
  print(string.format("%-8s %8s %13s %15s %15s %8s %12s", "op", "ferry", "ferry-stream", "coreutils-pipe",
    "coreutils-file", "ratio", "result-copy"))
  for _, r in ipairs(rows) do
    print(string.format("%-8s %8.0f %13.0f %15.0f %15.0f %7.2fx %12.0f", r.op, r.ferry, r.ferry_stream,
      r.coreutils_pipe, r.coreutils_file, r.ratio, r.result_copy))
  end
  print("ferry: one-shot call; ferry-stream: 1 MiB chunks; coreutils-pipe: base64 run by ferry.proc.run,")
  print("stdin and stdout piped; coreutils-file: base64 < file > /dev/null; ratio = ferry / coreutils-pipe;")
  print("result-copy: only creating a Lua string of the result's size, the ceiling of a one-shot call")
end

--- Run the benchmark, print a table and return the figures:
--- { encode = row, decode = row }, row = { op, input_bytes, ferry, ferry_stream, coreutils_pipe,
--- coreutils_file, result_copy, ratio } (MB/s of input; ratio = ferry / coreutils_pipe).
function M.run()
  local data = random_bytes(SIZE)
  local text = ferry.b64.encode(data)
  local raw_file, text_file = os.tmpname(), os.tmpname()
  write_file(raw_file, data)
  write_file(text_file, text)
  local ok, rows = pcall(function()
    return {
      measure("encode", data, text, ferry.b64.encode, ferry.b64.encoder, { "base64", "-w0" }, raw_file),
      measure("decode", text, data, ferry.b64.decode, ferry.b64.decoder, { "base64", "-d" }, text_file),
    }
  end)
  os.remove(raw_file)
  os.remove(text_file)
  if not ok then error(rows, 0) end
  return { encode = rows[1], decode = rows[2] }
end

--- Print the table for figures from M.run().
function M.report(res)
  print_table { res.encode, res.decode }
end

local modname = ...
if type(modname) ~= "string" or not modname:find("b64$") then M.report(M.run()) end

return M
