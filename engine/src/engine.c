/* The embedding API (ferry.h): a Lua state with the core, lua-cjson and the built-in Lua files.
 *
 * Module lookup for `require "ferry..."`: the user's dirs in the order search.c defines (each directory of
 * FERRY_PATH, then the config dir), then the files compiled into the binary, then Lua's usual
 * package.path/cpath. Adapters and providers are found the same way by scripts/ferry/policy.lua, which asks
 * core.search_dirs for the same order and core.embedded for the built-in copy. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lualib.h>

#include "ferry.h"
#include "internal.h"

int luaopen_cjson(lua_State *L);
void ferry_log_set(lua_State *L, ferry_log_fn fn, void *userdata);

struct ferry_engine {
  lua_State *L;
  char *error;
};

static const ferry_embedded_file *embedded_find(const char *path) {
  for (const ferry_embedded_file *f = ferry_embedded_files; f->path; f++)
    if (strcmp(f->path, path) == 0) return f;
  return NULL;
}

/* core.embedded(path) -> source | nil;  core.embedded() -> list of paths */
static int l_embedded(lua_State *L) {
  if (lua_isnoneornil(L, 1)) {
    lua_newtable(L);
    int i = 1;
    for (const ferry_embedded_file *f = ferry_embedded_files; f->path; f++) {
      lua_pushstring(L, f->path);
      lua_rawseti(L, -2, i++);
    }
    return 1;
  }
  const ferry_embedded_file *f = embedded_find(luaL_checkstring(L, 1));
  if (!f) return 0;
  lua_pushlstring(L, (const char *)f->data, f->len);
  return 1;
}

/* "ferry" -> "ferry/init.lua", "ferry.client" -> "ferry/client.lua"; other names are not ours. */
static int module_path(lua_State *L, const char *name) {
  if (strcmp(name, "ferry") == 0) {
    lua_pushstring(L, "ferry/init.lua");
    return 1;
  }
  if (strncmp(name, "ferry.", 6) != 0 || strcmp(name, "ferry.core") == 0) return 0;
  luaL_gsub(L, name, ".", "/");
  lua_pushstring(L, ".lua");
  lua_concat(L, 2);
  return 1;
}

static int try_dir(lua_State *L, const char *dir, const char *rel) {
  if (!dir || !*dir) return 0;
  lua_pushfstring(L, "%s/%s", dir, rel);
  const char *file = lua_tostring(L, -1);
  FILE *fp = fopen(file, "r");
  if (!fp) {
    lua_pop(L, 1);
    return 0;
  }
  fclose(fp);
  if (luaL_loadfile(L, file) != LUA_OK) return lua_error(L);
  lua_insert(L, -2); /* loader, then file name as the second argument */
  return 2;
}

/* package.searchers[1] in an engine: the user's dirs (search.c: FERRY_PATH, config dir), then embedded. */
static int searcher(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  if (!module_path(L, name)) return 0; /* not a ferry module: the other searchers explain */
  const char *rel = lua_tostring(L, -1);
  ferry_push_search_dirs(L);
  for (lua_Integer i = 1; lua_rawgeti(L, -1, i) == LUA_TTABLE; i++) {
    lua_getfield(L, -1, "dir");
    int n = try_dir(L, lua_tostring(L, -1), rel);
    if (n) return n;
    lua_pop(L, 2);
  }
  lua_pop(L, 2);
  const ferry_embedded_file *f = embedded_find(rel);
  if (!f) {
    lua_pushfstring(L, "no built-in file '%s'", rel);
    return 1;
  }
  lua_pushfstring(L, "@[ferry]/%s", rel);
  if (luaL_loadbuffer(L, (const char *)f->data, f->len, lua_tostring(L, -1)) != LUA_OK)
    return lua_error(L);
  lua_pushfstring(L, "[ferry]/%s", rel);
  return 2;
}

void ferry_open_lineedit(lua_State *L);

static int open_core_with_embedded(lua_State *L) {
  luaopen_ferry_core(L);
  ferry_open_lineedit(L);
  lua_pushcfunction(L, l_embedded);
  lua_setfield(L, -2, "embedded");
  return 1;
}

static int setup(lua_State *L) {
  luaL_openlibs(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, open_core_with_embedded);
  lua_setfield(L, -2, "ferry.core");
  lua_pushcfunction(L, luaopen_cjson);
  lua_setfield(L, -2, "cjson");
  lua_pop(L, 1);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "searchers");
  for (lua_Integer i = luaL_len(L, -1); i >= 1; i--) { /* shift, then put ours first */
    lua_geti(L, -1, i);
    lua_seti(L, -2, i + 1);
  }
  lua_pushcfunction(L, searcher);
  lua_seti(L, -2, 1);
  lua_pop(L, 2);
  return 0;
}

static ferry_engine *engine_new(uv_loop_t *loop) {
  ferry_engine *e = calloc(1, sizeof *e);
  if (!e) return NULL;
  e->L = luaL_newstate();
  if (!e->L) {
    free(e);
    return NULL;
  }
  lua_pushcfunction(e->L, setup);
  if (lua_pcall(e->L, 0, 0, 0) != LUA_OK) {
    lua_close(e->L);
    free(e);
    return NULL;
  }
  if (loop) ferry_loop_set(e->L, loop);
  return e;
}

ferry_engine *ferry_new(void) { return engine_new(NULL); }

ferry_engine *ferry_new_with_loop(uv_loop_t *loop) { return engine_new(loop); }

static void set_error(ferry_engine *e, const char *msg) {
  free(e->error);
  e->error = msg ? strdup(msg) : NULL;
}

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

static int call_chunk(ferry_engine *e, int status) {
  lua_State *L = e->L;
  if (status == LUA_OK) {
    int base = lua_gettop(L);
    lua_pushcfunction(L, traceback);
    lua_insert(L, base);
    status = lua_pcall(L, 0, 0, base);
    lua_remove(L, base);
  }
  if (status != LUA_OK) {
    set_error(e, lua_tostring(L, -1));
    lua_pop(L, 1);
    return status;
  }
  set_error(e, NULL);
  return 0;
}

int ferry_dofile(ferry_engine *e, const char *path) { return call_chunk(e, luaL_loadfile(e->L, path)); }

int ferry_dostring(ferry_engine *e, const char *code) {
  return call_chunk(e, luaL_loadbuffer(e->L, code, strlen(code), "=(ferry)"));
}

const char *ferry_error(ferry_engine *e) { return e->error ? e->error : ""; }

lua_State *ferry_lua(ferry_engine *e) { return e->L; }

uv_loop_t *ferry_loop(ferry_engine *e) { return ferry_loop_get(e->L); }

int ferry_run(ferry_engine *e) {
  return ferry_dostring(e, "require('ferry.task').drain()");
}

void ferry_set_log(ferry_engine *e, ferry_log_fn fn, void *userdata) { ferry_log_set(e->L, fn, userdata); }

void ferry_free(ferry_engine *e) {
  if (!e) return;
  lua_close(e->L);
  free(e->error);
  free(e);
}
