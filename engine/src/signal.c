/* Signal watchers on the engine's loop (libuv's uv_signal: the handler only records, the loop calls Lua).
 *
 * core.signal_watch(name, fn) -> watcher   fn(name) runs on the loop each time the process gets the signal
 *                                          ("SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1", "SIGUSR2"; also without
 *                                          the SIG); the watcher does not keep the loop alive
 * watcher:stop()                           stops watching (the signal's default action is back once no
 *                                          watcher is left); also __gc/__close
 *
 * Like timer.c, the uv handle lives in a malloc'd struct freed by its close callback; the Lua value points
 * to it and the struct points back (owner), cleared when it goes. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define SIGNAL_MT "ferry.signal"

typedef struct watcher {
  uv_signal_t handle;
  lua_State *L; /* main thread */
  int fn_ref;
  const char *name;
  struct watcher **owner;
} watcher;

static const struct {
  const char *name;
  int signum;
} SIGNALS[] = {{"SIGTERM", SIGTERM}, {"SIGINT", SIGINT}, {"SIGHUP", SIGHUP}, {"SIGUSR1", SIGUSR1},
               {"SIGUSR2", SIGUSR2}};

static void close_cb(uv_handle_t *h) {
  watcher *w = h->data;
  if (w->owner) *w->owner = NULL;
  free(w);
}

static void watcher_close(watcher *w) {
  if (uv_is_closing((uv_handle_t *)&w->handle)) return;
  ferry_unref(w->L, &w->fn_ref);
  uv_close((uv_handle_t *)&w->handle, close_cb);
}

static void signal_cb(uv_signal_t *h, int signum) {
  (void)signum;
  watcher *w = h->data;
  if (w->fn_ref == LUA_NOREF) return;
  lua_State *L = ferry_loop_thread(w->L);
  lua_pushstring(L, w->name);
  ferry_loop_call(L, w->fn_ref, 1);
}

static int l_stop(lua_State *L) {
  watcher **ud = luaL_checkudata(L, 1, SIGNAL_MT);
  watcher *w = *ud;
  *ud = NULL;
  if (w) {
    w->owner = NULL;
    watcher_close(w);
  }
  return 0;
}

static int l_signal_watch(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  int found = -1;
  for (size_t i = 0; i < sizeof SIGNALS / sizeof SIGNALS[0]; i++)
    if (strcmp(SIGNALS[i].name, name) == 0 || strcmp(SIGNALS[i].name + 3, name) == 0) found = (int)i;
  if (found < 0)
    return luaL_error(L, "signal_watch: unknown signal '%s' (SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2)", name);
  watcher **ud = lua_newuserdatauv(L, sizeof *ud, 0); /* first: raising later leaks nothing */
  *ud = NULL;
  luaL_setmetatable(L, SIGNAL_MT);
  watcher *w = calloc(1, sizeof *w);
  if (!w) return luaL_error(L, "ferry: out of memory");
  uv_signal_init(ferry_loop_get(L), &w->handle);
  w->handle.data = w;
  w->L = ferry_main_thread(L);
  w->name = SIGNALS[found].name;
  lua_pushvalue(L, 2);
  w->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  w->owner = ud;
  *ud = w;
  int rc = uv_signal_start(&w->handle, signal_cb, SIGNALS[found].signum);
  if (rc != 0) {
    *ud = NULL;
    w->owner = NULL;
    watcher_close(w);
    return ferry_fail(L, uv_err_name(rc), "signal_watch %s: %s", name, uv_strerror(rc));
  }
  uv_unref((uv_handle_t *)&w->handle); /* a watcher alone does not keep the process running */
  return 1;
}

void ferry_open_signal(lua_State *L) {
  static const luaL_Reg methods[] = {{"stop", l_stop}, {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__gc", l_stop}, {"__close", l_stop}, {NULL, NULL}};
  ferry_new_class(L, SIGNAL_MT, meta, methods);
  lua_pushcfunction(L, l_signal_watch);
  lua_setfield(L, -2, "signal_watch");
}
