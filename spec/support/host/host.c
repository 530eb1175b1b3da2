/* A host program embedding ferry: its own libuv loop, a log callback, errors with tracebacks. */
#include <stdio.h>
#include <string.h>

#include <ferry.h>
#include <lauxlib.h>

static int log_lines;

static void on_log(void *userdata, ferry_log_level level, const char *message) {
  FILE *out = userdata;
  log_lines++;
  fprintf(out, "log[%d]: %s\n", (int)level, message);
}

int main(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  ferry_engine *e = ferry_new_with_loop(&loop);
  if (!e || ferry_loop(e) != &loop) return 10;
  ferry_set_log(e, on_log, stdout);

  /* A task started from Lua progresses while the HOST runs its loop. */
  if (ferry_dostring(e, "local ferry = require 'ferry'\n"
                        "ferry.log('warn', 'from lua')\n"
                        "ferry.spawn(function()\n"
                        "  local r = assert(ferry.proc.run{argv={'echo', 'hello from a child'}})\n"
                        "  RESULT = r.stdout\n"
                        "end)") != 0) {
    fprintf(stderr, "dostring: %s\n", ferry_error(e));
    return 1;
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  lua_State *L = ferry_lua(e);
  lua_getglobal(L, "RESULT");
  printf("result: %s", lua_tostring(L, -1));
  lua_pop(L, 1);

  /* Errors come back with a traceback; the engine stays usable. */
  if (ferry_dostring(e, "local function inner() error('deliberate') end inner()") == 0) return 2;
  printf("error has traceback: %d\n", strstr(ferry_error(e), "stack traceback") != NULL);
  printf("error names it: %d\n", strstr(ferry_error(e), "deliberate") != NULL);
  if (ferry_dostring(e, "return 1") != 0) return 3;
  printf("error cleared: %d\n", ferry_error(e)[0] == '\0');
  printf("log lines: %d\n", log_lines);

  /* Freed with a timer, a child and a write still pending: the child is killed and the handles close when the
   * host next runs its loop, without touching the closed Lua state. */
  if (ferry_dostring(e, "local core = require 'ferry.core'\n"
                        "core.timer(60000, function() end)\n"
                        "P = assert(core.proc_start({argv = {'sleep', '30'}, stdin = true}, function() end))\n"
                        "P:write('x', function() end)") != 0)
    return 4;
  ferry_free(e);
  uv_run(&loop, UV_RUN_DEFAULT);
  printf("host loop closes after free: %d\n", uv_loop_close(&loop));

  /* An engine with its own loop, and ferry_dofile. */
  ferry_engine *e2 = ferry_new();
  FILE *f = fopen("host_script.lua", "w");
  fputs("local r = require('ferry').proc.run{argv={'sh','-c','exit 4'}}\nassert(r.code == 4)\n", f);
  fclose(f);
  int rc = ferry_dofile(e2, "host_script.lua");
  printf("dofile: %d %s\n", rc, ferry_error(e2));
  printf("missing file fails: %d\n", ferry_dofile(e2, "/nonexistent.lua") != 0);
  ferry_free(e2);
  return 0;
}
