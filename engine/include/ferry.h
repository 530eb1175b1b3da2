/* ferry: embed the sandbox runtime engine in a host program.
 *
 *   ferry_engine *e = ferry_new();
 *   if (ferry_dostring(e, "local ferry = require 'ferry' ...") != 0)
 *     fprintf(stderr, "%s\n", ferry_error(e));
 *   ferry_free(e);
 *
 * Link with `pkg-config --cflags --libs ferry`. An engine is one Lua state with the ferry module and the
 * built-in adapters and providers preloaded; use one engine per thread.
 */
#ifndef FERRY_H
#define FERRY_H

#ifdef __cplusplus
extern "C" {
#endif

#include <lua.h>
#include <uv.h>

#define FERRY_VERSION "0.1.0"

typedef struct ferry_engine ferry_engine;

/* Log levels passed to the log callback. */
typedef enum ferry_log_level {
  FERRY_LOG_DEBUG = 0,
  FERRY_LOG_INFO = 1,
  FERRY_LOG_WARN = 2,
  FERRY_LOG_ERROR = 3
} ferry_log_level;

typedef void (*ferry_log_fn)(void *userdata, ferry_log_level level, const char *message);

/* A new engine with its own libuv loop, or NULL when out of memory. */
ferry_engine *ferry_new(void);

/* A new engine that runs on the host's libuv loop. Tasks started with ferry.spawn then progress while
 * the host runs its loop; a blocking call made from Lua (outside a task) runs the loop itself, so it must
 * not be made from inside one of the loop's callbacks. */
ferry_engine *ferry_new_with_loop(uv_loop_t *loop);

/* Run a Lua file / string. 0 on success; otherwise non-zero and ferry_error() tells why. */
int ferry_dofile(ferry_engine *e, const char *path);
int ferry_dostring(ferry_engine *e, const char *code);

/* The last error with its Lua traceback, or "" when there was none. Valid until the next call. */
const char *ferry_error(ferry_engine *e);

/* The engine's Lua state, to push values, register functions or call ferry's Lua API directly. */
lua_State *ferry_lua(ferry_engine *e);

/* The engine's libuv loop (the host's when it handed one in). */
uv_loop_t *ferry_loop(ferry_engine *e);

/* Run the loop until every task started with ferry.spawn has finished. 0, or non-zero on error. */
int ferry_run(ferry_engine *e);

/* Receive ferry's log lines (from ferry.log in Lua) instead of having them written to stderr. */
void ferry_set_log(ferry_engine *e, ferry_log_fn fn, void *userdata);

/* Close the Lua state (killing any child still running) and free the engine. NULL is allowed. */
void ferry_free(ferry_engine *e);

/* The Lua module entry point, for `require "ferry.core"` from a plain Lua interpreter. */
int luaopen_ferry_core(lua_State *L);

#ifdef __cplusplus
}
#endif

#endif
