/* luaopen_ferry_core: the C core as one Lua table. scripts/ferry/init.lua gives it its public shape. */
#include <stdio.h>
#include <string.h>

#include "ferry.h"
#include "internal.h"

#define LOG_KEY "ferry.log"

typedef struct log_sink {
  ferry_log_fn fn;
  void *userdata;
} log_sink;

static const char *const level_names[] = {"debug", "info", "warn", "error", NULL};

void ferry_log_set(lua_State *L, ferry_log_fn fn, void *userdata) {
  log_sink *s = lua_newuserdatauv(L, sizeof *s, 0);
  s->fn = fn;
  s->userdata = userdata;
  lua_setfield(L, LUA_REGISTRYINDEX, LOG_KEY);
}

/* core.log(level, message): to the host's log callback, or stderr. */
static int l_log(lua_State *L) {
  int level = luaL_checkoption(L, 1, "info", level_names);
  const char *msg = luaL_checkstring(L, 2);
  log_sink *s = NULL;
  if (lua_getfield(L, LUA_REGISTRYINDEX, LOG_KEY) == LUA_TUSERDATA) s = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (s && s->fn) {
    s->fn(s->userdata, (ferry_log_level)level, msg);
  } else {
    fprintf(stderr, "ferry: %s%s%s\n", level >= FERRY_LOG_WARN ? level_names[level] : "",
            level >= FERRY_LOG_WARN ? ": " : "", msg);
    fflush(stderr);
  }
  return 0;
}

int luaopen_ferry_core(lua_State *L) {
  lua_newtable(L);
  ferry_open_loop(L);
  ferry_open_timer(L);
  ferry_open_proc(L);
  ferry_open_b64(L);
  ferry_open_sh(L);
  ferry_open_hash(L);
  ferry_open_tar_writer(L);
  ferry_open_tar_reader(L);
  ferry_open_fs(L);
  ferry_open_runfiles(L);
  ferry_open_search(L);
  ferry_open_hmac(L);
  ferry_open_http_client(L);
  ferry_open_http_server(L);
  ferry_open_tree(L);
  ferry_open_tree_walk(L);
  ferry_open_tree_io(L);
  ferry_open_tree_listing(L);
  ferry_open_tree_tar(L);
  ferry_open_exclude(L);
  ferry_open_signal(L);
  lua_pushcfunction(L, l_log);
  lua_setfield(L, -2, "log");
  lua_pushstring(L, FERRY_VERSION);
  lua_setfield(L, -2, "version");
  return 1;
}
