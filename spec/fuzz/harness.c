/* libFuzzer entry for a Lua target: an engine made as the ferry binary makes it (ferry_new: the core built
 * with the fuzz flags, lua-cjson and the built-in Lua files), a driver file FERRY_FUZZ_DRIVER that returns
 * check(data) (or {check = fn, close = fn}), and each input handed to check. The driver knows the contract
 * of the function it fuzzes: it catches what the contract allows and raises on anything else, so any error
 * reaching this file is a finding, reported as a crash (abort) with the Lua traceback.
 *
 * The Lua code is not compiled with coverage, so a line hook gives libFuzzer its feedback: each (chunk, line)
 * transition bumps a counter in the __libfuzzer_extra_counters section, which libFuzzer reads like the
 * compiler's own counters. The C core's coverage comes from -fsanitize=fuzzer-no-link as usual.
 *
 * The driver path: FERRY_FUZZ_DRIVER in the environment, else the one compiled in (-DFERRY_FUZZ_DRIVER). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "ferry.h"

#define COUNTERS (1u << 16)

__attribute__((section("__libfuzzer_extra_counters"))) static uint8_t lua_counters[COUNTERS];

static ferry_engine *engine;
static int check_ref = LUA_NOREF, close_ref = LUA_NOREF;
static uintptr_t previous;

static void line_hook(lua_State *L, lua_Debug *ar) {
  if (!lua_getinfo(L, "S", ar)) return;
  /* ar->source points into the chunk's source name, which lives as long as the chunk: a stable id */
  uintptr_t here = ((uintptr_t)ar->source * 0x9E3779B97F4A7C15ull) ^ ((uintptr_t)ar->currentline * 0x85EBCA6Bu);
  here ^= here >> 29;
  lua_counters[(here ^ previous) & (COUNTERS - 1)]++;
  previous = here >> 1;
}

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  luaL_traceback(L, L, msg, 1);
  return 1;
}

static void die(const char *what, const char *msg) {
  fprintf(stderr, "ferry-fuzz: %s: %s\n", what, msg ? msg : "(no message)");
  fflush(stderr);
  abort();
}

static void close_driver(void) {
  if (!engine || close_ref == LUA_NOREF) return;
  lua_State *L = ferry_lua(engine);
  lua_sethook(L, NULL, 0, 0);
  lua_rawgeti(L, LUA_REGISTRYINDEX, close_ref);
  if (lua_pcall(L, 0, 0, 0) != LUA_OK) fprintf(stderr, "ferry-fuzz: close: %s\n", lua_tostring(L, -1));
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  /* only the built-in Lua files: no user override may change what is fuzzed */
  unsetenv("FERRY_PATH");
  setenv("XDG_CONFIG_HOME", "/nonexistent/ferry-fuzz", 1);
  const char *driver = getenv("FERRY_FUZZ_DRIVER");
#ifdef FERRY_FUZZ_DRIVER
  if (!driver) driver = FERRY_FUZZ_DRIVER;
#endif
  if (!driver) die("setup", "no driver: set FERRY_FUZZ_DRIVER");
  engine = ferry_new();
  if (!engine) die("setup", "ferry_new failed");
  lua_State *L = ferry_lua(engine);
  lua_pushcfunction(L, traceback);
  if (luaL_loadfile(L, driver) != LUA_OK) die("loading the driver", lua_tostring(L, -1));
  if (lua_pcall(L, 0, 1, -2) != LUA_OK) die("running the driver", lua_tostring(L, -1));
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "close");
    if (lua_isfunction(L, -1)) close_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    else lua_pop(L, 1);
    lua_getfield(L, -1, "check");
    lua_remove(L, -2);
  }
  if (!lua_isfunction(L, -1)) die("setup", "the driver must return check(data) or {check = fn, close = fn}");
  check_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pop(L, 1);
  atexit(close_driver);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_State *L = ferry_lua(engine);
  int base = lua_gettop(L);
  lua_pushcfunction(L, traceback);
  lua_rawgeti(L, LUA_REGISTRYINDEX, check_ref);
  lua_pushlstring(L, (const char *)data, size);
  previous = 0;
  lua_sethook(L, line_hook, LUA_MASKLINE, 0);
  int status = lua_pcall(L, 1, 0, base + 1);
  lua_sethook(L, NULL, 0, 0);
  if (status != LUA_OK) die("contract violation", lua_tostring(L, -1));
  lua_settop(L, base);
  /* what this input allocated is freed now: libFuzzer's leak check (which runs when an input leaves more
   * mallocs than frees) then sees only what the C core really lost */
  lua_gc(L, LUA_GCCOLLECT, 0);
  return 0;
}
