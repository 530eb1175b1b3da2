/* The libuv loop behind a Lua state, and the calls Lua uses to drive it.
 *
 * Lua's scheduler (scripts/ferry/task.lua) keeps each task in a coroutine; C callbacks resume them by
 * calling a Lua function through ferry_loop_call. An error inside such a callback cannot propagate
 * through libuv, so it is kept and re-raised by the run_once call that drove the loop.
 *
 * The loop context also holds the state's registries of children (proc.c) and timers (timer.c): per state,
 * so two engines on two threads share nothing, and closing the state closes exactly what it started. */
#include <signal.h>
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
  ferry_node *procs, *timers; /* this state's children and timers (see internal.h) */
} loopctx;

static void close_walk_cb(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* The state is closing: kill its children and close its handles. A private loop is run until their close
 * callbacks have freed them; on a host's loop they finish when the host runs it, without touching Lua. */
static int loopctx_gc(lua_State *L) {
  loopctx *c = luaL_checkudata(L, 1, LOOP_MT);
  c->closing = 1;
  if (c->loop == NULL) return 0;
  ferry_proc_close_all(&c->procs);
  ferry_timer_close_all(&c->timers);
  if (c->owns) {
    uv_walk(c->loop, close_walk_cb, NULL); /* anything else (the REPL's wakeup when its own gc came later) */
    uv_run(c->loop, UV_RUN_DEFAULT);
    uv_loop_close(c->loop);
  }
  c->loop = NULL;
  return 0;
}

void ferry_node_link(ferry_node **head, ferry_node *n) {
  n->next = *head;
  if (*head) (*head)->pprev = &n->next;
  n->pprev = head;
  *head = n;
}

void ferry_node_unlink(ferry_node *n) {
  if (n->pprev == NULL) return;
  *n->pprev = n->next;
  if (n->next) n->next->pprev = n->pprev;
  n->next = NULL;
  n->pprev = NULL;
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

ferry_node **ferry_loop_registry(lua_State *L, ferry_registry which) {
  loopctx *c = ctx_get(L);
  return which == FERRY_PROCS ? &c->procs : &c->timers;
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

void ferry_open_loop(lua_State *L) {
  static const luaL_Reg fns[] = {{"run_once", l_run_once}, {"handles", l_handles}, {"now_ms", l_now_ms},
                                 {"time_ms", l_time_ms},   {"getpid", l_getpid},   {NULL, NULL}};
  luaL_setfuncs(L, fns, 0);
}
