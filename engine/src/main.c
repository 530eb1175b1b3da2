/* The ferry binary: boot an engine and hand the command line to scripts/ferry/cli.lua. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>

#include <lauxlib.h>

#include "ferry.h"

int main(int argc, char **argv) {
  /* Large transfer buffers and results are allocated and freed over and over: keep them on the heap for
   * reuse instead of a fresh mmap each time, whose page faults cost more than base64 itself. Peak memory is
   * unchanged; only its return to the system is deferred. */
  mallopt(M_MMAP_THRESHOLD, 256 * 1024 * 1024);
  mallopt(M_TRIM_THRESHOLD, 512 * 1024 * 1024);
  mallopt(M_TOP_PAD, 64 * 1024 * 1024);
  ferry_engine *e = ferry_new();
  if (!e) {
    fprintf(stderr, "ferry: cannot create the engine (out of memory)\n");
    return 1;
  }
  lua_State *L = ferry_lua(e);
  lua_createtable(L, argc, 1);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i);
  }
  lua_setglobal(L, "FERRY_ARGV");
  int status = ferry_dostring(e, "FERRY_EXIT = require('ferry.cli').main(FERRY_ARGV)");
  int code = 1;
  if (status != 0) {
    fprintf(stderr, "ferry: %s\n", ferry_error(e));
  } else {
    lua_getglobal(L, "FERRY_EXIT");
    code = (int)luaL_optinteger(L, -1, 0);
    lua_pop(L, 1);
  }
  fflush(stdout);
  ferry_free(e);
  return code;
}
