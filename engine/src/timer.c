/* One-shot timers on the engine's loop.
 *
 * core.timer(ms, fn) -> timer   fn() runs once, ms milliseconds from now, on the loop
 * timer:stop()                  cancels it; a no-op on a timer that fired or was stopped (also __close)
 *
 * The uv_timer_t lives in a malloc'd struct that is freed by its close callback, so its memory outlives every
 * libuv access. The Lua value holds a pointer to it and the struct points back at that pointer (owner), which
 * the close callback clears: a method on a timer that fired or was stopped never reads freed memory. Dropping
 * the Lua value does not cancel the timer (ferry.sleep keeps none); the loop's registry closes what is left
 * when the state closes. */
#include <stdlib.h>

#include "internal.h"

#define TIMER_MT "ferry.timer"

typedef struct timer {
  ferry_node node; /* the state's timer registry: first, see internal.h */
  uv_timer_t handle;
  lua_State *L; /* main thread */
  int fn_ref;   /* LUA_NOREF once it fired, was stopped or the state closed */
  struct timer **owner; /* the Lua value's pointer, cleared when the struct is freed */
} timer;

static void close_cb(uv_handle_t *h) {
  timer *t = h->data;
  if (t->owner) *t->owner = NULL;
  free(t);
}

/* Cancel: fn will not run; the struct goes with the handle's close callback. */
static void timer_close(timer *t) {
  if (uv_is_closing((uv_handle_t *)&t->handle)) return;
  ferry_node_unlink(&t->node);
  if (t->fn_ref != LUA_NOREF) luaL_unref(t->L, LUA_REGISTRYINDEX, t->fn_ref);
  t->fn_ref = LUA_NOREF;
  uv_close((uv_handle_t *)&t->handle, close_cb);
}

static void timer_cb(uv_timer_t *h) {
  timer *t = h->data;
  lua_State *L = ferry_loop_thread(t->L);
  int ref = t->fn_ref;
  t->fn_ref = LUA_NOREF;
  timer_close(t);
  ferry_loop_call(L, ref, 0);
  luaL_unref(L, LUA_REGISTRYINDEX, ref);
}

void ferry_timer_close_all(ferry_node **timers) {
  while (*timers) {
    timer *t = (timer *)*timers;
    if (t->owner) *t->owner = NULL; /* the Lua value may be finalized after this: it must not see t */
    t->owner = NULL;
    timer_close(t); /* unlinks it */
  }
}

static int l_timer_stop(lua_State *L) {
  timer **ud = luaL_checkudata(L, 1, TIMER_MT);
  if (*ud) timer_close(*ud);
  return 0;
}

/* The Lua value is collected: the timer still fires, it just has no owner to tell when it goes. */
static int l_timer_gc(lua_State *L) {
  timer **ud = luaL_checkudata(L, 1, TIMER_MT);
  if (*ud) (*ud)->owner = NULL;
  *ud = NULL;
  return 0;
}

static int l_timer(lua_State *L) {
  lua_Integer ms = luaL_checkinteger(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  luaL_argcheck(L, ms >= 0, 1, "timer delay must be >= 0");
  uv_loop_t *loop = ferry_loop_get(L);
  timer **ud = lua_newuserdatauv(L, sizeof *ud, 0); /* first: raising later leaks nothing */
  *ud = NULL;
  luaL_setmetatable(L, TIMER_MT);
  lua_pushvalue(L, 2);
  int fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  timer *t = calloc(1, sizeof *t);
  if (!t) {
    luaL_unref(L, LUA_REGISTRYINDEX, fn_ref);
    return luaL_error(L, "ferry: out of memory");
  }
  uv_timer_init(loop, &t->handle);
  t->handle.data = t;
  t->L = ferry_main_thread(L);
  t->fn_ref = fn_ref;
  t->owner = ud;
  *ud = t;
  ferry_node_link(ferry_loop_registry(L, FERRY_TIMERS), &t->node);
  uv_update_time(loop); /* the loop's cached time may be stale: never fire early */
  uv_timer_start(&t->handle, timer_cb, (uint64_t)ms, 0);
  return 1;
}

void ferry_open_timer(lua_State *L) {
  static const luaL_Reg methods[] = {{"stop", l_timer_stop}, {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__gc", l_timer_gc}, {"__close", l_timer_stop}, {NULL, NULL}};
  ferry_new_class(L, TIMER_MT, meta, methods);
  lua_pushcfunction(L, l_timer);
  lua_setfield(L, -2, "timer");
}
