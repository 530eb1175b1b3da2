/* The libuv loop behind a Lua state, and the calls Lua uses to drive it.
 *
 * Lua's scheduler (scripts/ferry/task.lua) keeps each task in a coroutine; C callbacks resume them by
 * calling a Lua function through ferry_loop_call. An error inside such a callback cannot propagate
 * through libuv, so it is kept and re-raised by the run_once call that drove the loop. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define LOOP_KEY "ferry.loop"    /* registry: the engine's loopctx */
#define LOOP_MT "ferry.loopctx"  /* its metatable */

typedef struct loopctx {
  uv_loop_t *loop;
  uv_loop_t own; /* used when no host loop was handed in */
  int owns;
  int running;   /* depth of run_once calls: blocking inside a callback is refused */
  lua_State *cur; /* the thread that drives the loop now; callbacks run on it */
  int error_ref; /* error raised inside a callback, re-raised by run_once */
  int closing;   /* the state is closing: callbacks no longer reach Lua */
} loopctx;

typedef struct luatimer {
  uv_timer_t handle;
  lua_State *L;
  int fn_ref;
  int closed;
} luatimer;

static void close_walk_cb(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

static int loopctx_gc(lua_State *L) {
  loopctx *c = luaL_checkudata(L, 1, LOOP_MT);
  c->closing = 1;
  if (c->loop) ferry_proc_kill_all(L, 1);
  if (c->owns && c->loop) {
    /* Let pending close callbacks free their memory, then close anything left. */
    uv_run(c->loop, UV_RUN_NOWAIT);
    uv_walk(c->loop, close_walk_cb, NULL);
    uv_run(c->loop, UV_RUN_DEFAULT);
    uv_loop_close(c->loop);
  }
  c->loop = NULL;
  return 0;
}

static loopctx *ctx_get(lua_State *L) {
  loopctx *c;
  if (lua_getfield(L, LUA_REGISTRYINDEX, LOOP_KEY) == LUA_TUSERDATA) {
    c = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return c;
  }
  lua_pop(L, 1);
  c = lua_newuserdatauv(L, sizeof *c, 0);
  memset(c, 0, sizeof *c);
  c->error_ref = LUA_NOREF;
  if (luaL_newmetatable(L, LOOP_MT)) {
    lua_pushcfunction(L, loopctx_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, LOOP_KEY);
  return c;
}

void ferry_loop_set(lua_State *L, uv_loop_t *loop) {
  loopctx *c = ctx_get(L);
  if (c->loop == NULL) {
    c->loop = loop;
    c->owns = 0;
  }
}

uv_loop_t *ferry_loop_get(lua_State *L) {
  loopctx *c = ctx_get(L);
  if (c->loop == NULL) {
    int rc = uv_loop_init(&c->own);
    if (rc != 0) luaL_error(L, "ferry: cannot start the event loop: %s", uv_strerror(rc));
    c->loop = &c->own;
    c->owns = 1;
    /* A child that closes its stdin early must give EPIPE, not kill the engine. */
    signal(SIGPIPE, SIG_IGN);
  }
  return c->loop;
}

lua_State *ferry_loop_thread(lua_State *L) {
  loopctx *c = ctx_get(L);
  return c->cur ? c->cur : L;
}

void ferry_loop_call(lua_State *L, int fn, int nargs) {
  if (ctx_get(L)->closing) {
    lua_pop(L, nargs);
    return;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, fn);
  lua_insert(L, -(nargs + 1));
  if (lua_pcall(L, nargs, 0, 0) != LUA_OK) {
    loopctx *c = ctx_get(L);
    if (c->error_ref == LUA_NOREF) {
      c->error_ref = luaL_ref(L, LUA_REGISTRYINDEX);
      uv_stop(c->loop);
    } else {
      lua_pop(L, 1); /* keep the first error: later ones are usually its echoes */
    }
  }
}

int ferry_fail(lua_State *L, const char *code, const char *fmt, ...) {
  va_list ap;
  lua_pushnil(L);
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_pushstring(L, code);
  return 3;
}

static int run_mode(lua_State *L, uv_run_mode mode) {
  loopctx *c = ctx_get(L);
  uv_loop_t *loop = ferry_loop_get(L);
  if (c->running > 0)
    return luaL_error(L, "ferry: a blocking call was made from inside a loop callback; "
                         "run it in a task (ferry.spawn) instead");
  c->running++;
  c->cur = L;
  int alive = uv_run(loop, mode);
  c->cur = NULL;
  c->running--;
  if (c->error_ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->error_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, c->error_ref);
    c->error_ref = LUA_NOREF;
    return lua_error(L);
  }
  lua_pushboolean(L, alive != 0 || uv_loop_alive(loop));
  return 1;
}

/* core.run_once() -> alive: wait for and handle one round of events. */
static int l_run_once(lua_State *L) { return run_mode(L, UV_RUN_ONCE); }

static void count_walk_cb(uv_handle_t *h, void *arg) {
  if (!uv_is_closing(h)) (*(int *)arg)++;
}

/* core.handles() -> n: open handles of the loop, not counting those already closing (a leak shows here). */
static int l_handles(lua_State *L) {
  int n = 0;
  uv_walk(ferry_loop_get(L), count_walk_cb, &n);
  lua_pushinteger(L, n);
  return 1;
}

/* core.now_ms() -> milliseconds from a monotonic clock, fractional. */
static int l_now_ms(lua_State *L) {
  lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e6);
  return 1;
}

/* core.time_ms() -> wall clock milliseconds since the epoch. */
static int l_time_ms(lua_State *L) {
  uv_timeval64_t tv;
  uv_gettimeofday(&tv);
  lua_pushinteger(L, (lua_Integer)tv.tv_sec * 1000 + tv.tv_usec / 1000);
  return 1;
}

/* core.getpid() -> this process's pid */
static int l_getpid(lua_State *L) {
  lua_pushinteger(L, uv_os_getpid());
  return 1;
}

static void timer_close_cb(uv_handle_t *h) { free(h); }

static void timer_release(luatimer *t) {
  if (t->closed) return;
  t->closed = 1;
  luaL_unref(t->L, LUA_REGISTRYINDEX, t->fn_ref);
  uv_close((uv_handle_t *)&t->handle, timer_close_cb);
}

static void timer_cb(uv_timer_t *h) {
  luatimer *t = (luatimer *)h;
  lua_State *L = ferry_loop_thread(t->L);
  int ref = t->fn_ref;
  t->fn_ref = LUA_NOREF;
  timer_release(t);
  ferry_loop_call(L, ref, 0);
  luaL_unref(L, LUA_REGISTRYINDEX, ref);
}

static int l_timer_stop(lua_State *L) {
  luatimer **ud = luaL_checkudata(L, 1, "ferry.timer");
  if (*ud) {
    timer_release(*ud);
    *ud = NULL;
  }
  return 0;
}

/* core.timer(ms, fn) -> timer: call fn once after ms; timer:stop() cancels it. */
static int l_timer(lua_State *L) {
  lua_Integer ms = luaL_checkinteger(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  luaL_argcheck(L, ms >= 0, 1, "timer delay must be >= 0");
  luatimer *t = calloc(1, sizeof *t);
  if (!t) return luaL_error(L, "ferry: out of memory");
  uv_timer_init(ferry_loop_get(L), &t->handle);
  lua_State *main;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  main = lua_tothread(L, -1);
  lua_pop(L, 1);
  t->L = main;
  lua_pushvalue(L, 2);
  t->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  uv_update_time(t->handle.loop); /* the loop's cached time may be stale: never fire early */
  uv_timer_start(&t->handle, timer_cb, (uint64_t)ms, 0);
  luatimer **ud = lua_newuserdatauv(L, sizeof *ud, 0);
  *ud = t;
  luaL_setmetatable(L, "ferry.timer");
  return 1;
}

void ferry_open_loop(lua_State *L) {
  static const luaL_Reg timer_methods[] = {{"stop", l_timer_stop}, {NULL, NULL}};
  if (luaL_newmetatable(L, "ferry.timer")) {
    luaL_newlib(L, timer_methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  static const luaL_Reg fns[] = {{"run_once", l_run_once},
                                 {"handles", l_handles},   {"now_ms", l_now_ms},
                                 {"time_ms", l_time_ms},   {"timer", l_timer},
                                 {"getpid", l_getpid},
                                 {NULL, NULL}};
  luaL_setfuncs(L, fns, 0);
}
