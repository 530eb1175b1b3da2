/* Line editing (libedit) and Ctrl-C for the REPL.
 *
 * Ctrl-C during evaluation sets a hook that raises "interrupted!" at the next Lua instruction, as the
 * standalone lua does; when the code is waiting in the loop for a process, an async handle wakes the loop
 * and every child of the engine is stopped (TERM, then KILL after its grace period). */
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <editline/readline.h>

#include "internal.h"

static lua_State *sig_state;   /* the state the handler interrupts (the REPL's, one per process) */
static uv_async_t *sig_wakeup; /* wakes the loop so a waiting call returns */
static volatile sig_atomic_t interrupted;
static volatile sig_atomic_t at_prompt; /* Ctrl-C at the prompt abandons the line */
static sigjmp_buf prompt_jump;

static void interrupt_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  interrupted = 0;
  luaL_error(L, "interrupted!");
}

static void on_sigint(int sig) {
  (void)sig;
  if (at_prompt) {
    at_prompt = 0;
    siglongjmp(prompt_jump, 1);
  }
  interrupted = 1;
  if (sig_state) lua_sethook(sig_state, interrupt_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
  if (sig_wakeup) uv_async_send(sig_wakeup);
}

static void wakeup_cb(uv_async_t *h) {
  lua_State *L = h->data;
  if (interrupted) {
    ferry_proc_kill_all(L, 0);
    uv_stop(h->loop);
  }
}

/* core.interrupt_install(): route SIGINT to this state (the REPL calls it once). */
static int l_interrupt_install(lua_State *L) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  sig_state = lua_tothread(L, -1);
  lua_pop(L, 1);
  if (!sig_wakeup) {
    sig_wakeup = malloc(sizeof *sig_wakeup);
    if (!sig_wakeup) return luaL_error(L, "ferry: out of memory");
    uv_async_init(ferry_loop_get(L), sig_wakeup, wakeup_cb);
    sig_wakeup->data = sig_state;
    uv_unref((uv_handle_t *)sig_wakeup);
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  return 0;
}

/* core.interrupt_clear() -> was_interrupted: forget a Ctrl-C that arrived outside evaluation. */
static int l_interrupt_clear(lua_State *L) {
  lua_pushboolean(L, interrupted);
  interrupted = 0;
  if (sig_state) lua_sethook(sig_state, NULL, 0, 0);
  return 1;
}

/* core.readline(prompt) -> line | nil at end of input | false when Ctrl-C abandoned the line */
static int l_readline(lua_State *L) {
  const char *prompt = luaL_optstring(L, 1, "> ");
  if (sigsetjmp(prompt_jump, 1) != 0) {
    rl_free_line_state();
    rl_cleanup_after_signal();
    fputs("\n", stdout);
    fflush(stdout);
    lua_pushboolean(L, 0);
    return 1;
  }
  rl_catch_signals = 0;
  at_prompt = 1;
  char *line = readline(prompt);
  at_prompt = 0;
  if (!line) return 0;
  lua_pushstring(L, line);
  free(line);
  return 1;
}

/* core.history_add(line); core.history_load(path); core.history_save(path) */
static int l_history_add(lua_State *L) {
  add_history(luaL_checkstring(L, 1));
  return 0;
}

static int l_history_load(lua_State *L) {
  read_history(luaL_checkstring(L, 1));
  return 0;
}

static int l_history_save(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int rc = write_history(path);
  if (rc != 0) return ferry_fail(L, "EIO", "save history %s: %s", path, strerror(rc));
  lua_pushboolean(L, 1);
  return 1;
}

/* core.isatty(fd) -> bool */
static int l_isatty(lua_State *L) {
  lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
  return 1;
}

void ferry_open_lineedit(lua_State *L) {
  static const luaL_Reg fns[] = {{"readline", l_readline},
                                 {"isatty", l_isatty},
                                 {"history_add", l_history_add},
                                 {"history_load", l_history_load},
                                 {"history_save", l_history_save},
                                 {"interrupt_install", l_interrupt_install},
                                 {"interrupt_clear", l_interrupt_clear},
                                 {NULL, NULL}};
  luaL_setfuncs(L, fns, 0);
}
