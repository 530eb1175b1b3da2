/* Line editing (libedit) with a Lua completer, Ctrl-C for the REPL, and SIGINT/SIGTERM/SIGHUP for the command
 * line's verbs.
 *
 * Ctrl-C is handled as the standalone lua does: the SIGINT handler only sets a flag and, while code runs under
 * core.interrupt_pcall, installs a hook that raises "interrupted!" at the next Lua call, return, line or
 * instruction. When that code is waiting in the loop for a process, an async handle wakes the loop and every
 * child of the engine is stopped (TERM, then KILL after its grace period). The handler is installed without
 * SA_RESTART, so at the prompt libedit's read() fails with EINTR and readline() returns (libedit puts the
 * terminal back): the line is abandoned. Nothing jumps out of the signal handler.
 *
 * The verbs (exec, prepare, restore, ...) use core.signals_install(fn) instead: the first SIGINT, SIGTERM or
 * SIGHUP wakes the loop, which tells every child to stop (through its stdin first when it was started so, then
 * TERM and KILL, each after its grace period) and calls fn(signal name); Lua then unwinds its tasks once their
 * processes have ended (ferry.task.interrupt). A second signal takes its default action at once. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <editline/readline.h>

#include "internal.h"

#define INTERRUPT_MT "ferry.interrupt"      /* metatable of the state's interrupt */
#define INTERRUPT_KEY "ferry.interrupt.one" /* registry: the state's interrupt, once installed */

/* The signal handler's view (signals are per process: one REPL per process). */
static lua_State *volatile sig_state;   /* the thread running interruptible code, or NULL */
static uv_async_t *volatile sig_wakeup; /* wakes the loop so a waiting call returns */
static volatile sig_atomic_t interrupted;    /* a Ctrl-C came (at the prompt, or during interrupt_pcall) */
static volatile sig_atomic_t stop_children; /* the wakeup is to stop the children, then the loop */

typedef struct interrupt {
  uv_async_t *wakeup; /* malloc'd: its close may finish after the state is gone (a host's loop) */
  struct sigaction old;
  int installed;
} interrupt;

static void interrupt_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  lua_pushliteral(L, "interrupted!"); /* no position: it would name whatever line was running, often ferry's */
  lua_error(L);
}

static void on_sigint(int sig) {
  (void)sig;
  interrupted = 1;
  lua_State *L = sig_state;
  if (L == NULL) return; /* at the prompt (read() fails with EINTR) or between evaluations */
  lua_sethook(L, interrupt_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT, 1);
  stop_children = 1;
  uv_async_t *w = sig_wakeup;
  if (w) uv_async_send(w);
}

/* On the loop, soon after the signal: stop the children the code may wait for, and return to Lua (the hook). */
static void wakeup_cb(uv_async_t *h) {
  if (stop_children) {
    stop_children = 0;
    ferry_proc_kill_all(h->data, 0);
    uv_stop(h->loop);
  }
}

static void free_handle(uv_handle_t *h) { free(h); }

/* ---- SIGINT/SIGTERM/SIGHUP for the verbs ---- */

#define SIGNALS_MT "ferry.signals"
#define SIGNALS_KEY "ferry.signals.one"

static volatile sig_atomic_t term_signal;    /* the first signal that came, once installed */
static uv_async_t *volatile term_wakeup;     /* wakes the loop to handle it */
static const int term_signals[] = {SIGINT, SIGTERM, SIGHUP};
#define N_TERM_SIGNALS (sizeof term_signals / sizeof term_signals[0])

typedef struct signals {
  uv_async_t *wakeup; /* malloc'd, as the interrupt's */
  struct sigaction old[N_TERM_SIGNALS];
  int fn_ref;
  int installed;
} signals;

static const char *term_signal_name(int sig) {
  return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : sig == SIGHUP ? "SIGHUP" : "SIGNAL";
}

static void on_term_signal(int sig) {
  if (term_signal != 0) { /* the second one: its default action, now */
    signal(sig, SIG_DFL);
    raise(sig);
    return;
  }
  term_signal = sig;
  uv_async_t *w = term_wakeup;
  if (w) uv_async_send(w);
}

/* On the loop, after the first signal: stop every child, then tell Lua. */
static void term_wakeup_cb(uv_async_t *h) {
  lua_State *L = h->data;
  if (L == NULL || term_signal == 0) return;
  ferry_proc_kill_all(L, 0);
  lua_getfield(L, LUA_REGISTRYINDEX, SIGNALS_KEY);
  signals *s = luaL_testudata(L, -1, SIGNALS_MT);
  lua_pop(L, 1);
  if (s == NULL || s->fn_ref == LUA_NOREF) return;
  lua_State *T = ferry_loop_thread(L);
  lua_pushstring(T, term_signal_name(term_signal));
  ferry_loop_call(T, s->fn_ref, 1);
}

static int signals_gc(lua_State *L) {
  signals *s = luaL_checkudata(L, 1, SIGNALS_MT);
  if (s->installed)
    for (size_t i = 0; i < N_TERM_SIGNALS; i++) sigaction(term_signals[i], &s->old[i], NULL);
  s->installed = 0;
  if (term_wakeup == s->wakeup) term_wakeup = NULL;
  if (s->wakeup) {
    s->wakeup->data = NULL;
    if (!uv_is_closing((uv_handle_t *)s->wakeup)) uv_close((uv_handle_t *)s->wakeup, free_handle);
  }
  s->wakeup = NULL;
  return 0;
}

/* core.signals_install(fn): SIGINT, SIGTERM and SIGHUP stop this state's children and call fn(signal name) on
 * the loop (once; a second signal kills the process). Installing again replaces fn. */
static int l_signals_install(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  signals *s;
  if (lua_getfield(L, LUA_REGISTRYINDEX, SIGNALS_KEY) == LUA_TUSERDATA) {
    s = lua_touserdata(L, -1);
    luaL_unref(L, LUA_REGISTRYINDEX, s->fn_ref);
    lua_pushvalue(L, 1);
    s->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
  }
  lua_pop(L, 1);
  uv_loop_t *loop = ferry_loop_get(L);
  s = lua_newuserdatauv(L, sizeof *s, 0);
  memset(s, 0, sizeof *s);
  s->fn_ref = LUA_NOREF;
  luaL_setmetatable(L, SIGNALS_MT);
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, SIGNALS_KEY); /* lives as long as the state */
  s->wakeup = malloc(sizeof *s->wakeup);
  if (!s->wakeup) return luaL_error(L, "ferry: out of memory");
  uv_async_init(loop, s->wakeup, term_wakeup_cb);
  s->wakeup->data = ferry_main_thread(L);
  uv_unref((uv_handle_t *)s->wakeup);
  lua_pushvalue(L, 1);
  s->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  term_signal = 0;
  term_wakeup = s->wakeup;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_term_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (size_t i = 0; i < N_TERM_SIGNALS; i++) sigaction(term_signals[i], &sa, &s->old[i]);
  s->installed = 1;
  return 0;
}

/* core.signal_pending() -> "SIGINT"|"SIGTERM"|"SIGHUP" when one came since signals_install, else nil. */
static int l_signal_pending(lua_State *L) {
  if (term_signal == 0) return 0;
  lua_pushstring(L, term_signal_name(term_signal));
  return 1;
}

/* The state closes: SIGINT goes back to what it was, the wakeup handle is closed. */
static int interrupt_gc(lua_State *L) {
  interrupt *it = luaL_checkudata(L, 1, INTERRUPT_MT);
  if (it->installed) sigaction(SIGINT, &it->old, NULL);
  it->installed = 0;
  if (sig_wakeup == it->wakeup) sig_wakeup = NULL;
  if (it->wakeup && !uv_is_closing((uv_handle_t *)it->wakeup)) uv_close((uv_handle_t *)it->wakeup, free_handle);
  it->wakeup = NULL;
  return 0;
}

/* core.interrupt_install(): route SIGINT to this state (the REPL calls it once). */
static int l_interrupt_install(lua_State *L) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, INTERRUPT_KEY) != LUA_TNIL) return 0;
  uv_loop_t *loop = ferry_loop_get(L);
  interrupt *it = lua_newuserdatauv(L, sizeof *it, 0);
  memset(it, 0, sizeof *it);
  luaL_setmetatable(L, INTERRUPT_MT);
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, INTERRUPT_KEY); /* lives as long as the state */
  it->wakeup = malloc(sizeof *it->wakeup);
  if (!it->wakeup) return luaL_error(L, "ferry: out of memory");
  uv_async_init(loop, it->wakeup, wakeup_cb);
  it->wakeup->data = ferry_main_thread(L);
  uv_unref((uv_handle_t *)it->wakeup);
  sig_wakeup = it->wakeup;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint; /* no SA_RESTART: a blocked read() returns EINTR */
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &it->old);
  it->installed = 1;
  return 0;
}

/* core.interrupt_pcall(fn, msgh) -> true, ... | false, msgh(err): call fn as xpcall does, with Ctrl-C
 * raising "interrupted!" inside it and stopping this state's children (also when the loop had no chance to).
 * A Ctrl-C before or after the call is forgotten; the hook never outlives the call, so the caller's own code
 * is never interrupted. */
static int l_interrupt_pcall(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  lua_insert(L, 1); /* msgh, fn */
  lua_State *outer = sig_state;
  interrupted = 0;
  sig_state = L;
  int status = lua_pcall(L, 0, LUA_MULTRET, 1);
  sig_state = outer; /* first: a signal from now on leaves L's hook alone */
  lua_sethook(L, NULL, 0, 0);
  if (interrupted) ferry_proc_kill_all(L, 0);
  interrupted = 0;
  stop_children = 0;
  lua_pushboolean(L, status == LUA_OK);
  lua_replace(L, 1);
  return lua_gettop(L);
}

/* ---- completion ---- */

/* The state whose completer runs during this readline() (readline is not reentrant: one at a time). */
static lua_State *complete_state;
#define COMPLETER_KEY "ferry.readline.completer"

/* Every byte that ends a word for completion: whitespace and punctuation but '_', so the word libedit
 * replaces is the last name of a chain (`pr` of `ferry.pr`); the completer reads the chain from the line. */
static char word_breaks[] = " \t\n\"\\'`@$><=;|&{}()[],.:+-*/%^#~!?";

/* The completer's list for the line up to the cursor, as libedit takes it: [0] the text replacing the word
 * (the names' common prefix), then each name, NULL-terminated; malloc'd (libedit frees it). NULL for none. */
static char **complete_cb(const char *text, int start, int end) {
  (void)text;
  (void)start;
  rl_attempted_completion_over = 1; /* never libedit's file name completion */
  lua_State *L = complete_state;
  if (L == NULL || !lua_checkstack(L, 4)) return NULL;
  int top = lua_gettop(L);
  lua_getfield(L, LUA_REGISTRYINDEX, COMPLETER_KEY);
  lua_pushlstring(L, rl_line_buffer, end > 0 ? (size_t)end : 0);
  char **matches = NULL;
  if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_istable(L, -1)) { /* an error: no completion, no message */
    size_t n = lua_rawlen(L, -1), kept = 0;
    matches = calloc(n + 3, sizeof *matches); /* libedit reads matches[2] even for one match */
    for (size_t i = 1; matches && i <= n; i++) {
      if (lua_rawgeti(L, -1, (lua_Integer)i) == LUA_TSTRING) {
        char *m = strdup(lua_tostring(L, -1));
        if (m) matches[1 + kept++] = m;
      }
      lua_pop(L, 1);
    }
    if (matches && kept > 0) {
      size_t common = strlen(matches[1]);
      for (size_t i = 2; i <= kept; i++) {
        size_t j = 0;
        while (j < common && matches[i][j] == matches[1][j]) j++;
        common = j;
      }
      matches[0] = strndup(matches[1], common);
    }
    if (matches && matches[0] == NULL) { /* nothing to offer (or out of memory) */
      for (size_t i = 1; i <= kept; i++) free(matches[i]);
      free(matches);
      matches = NULL;
    }
  }
  lua_settop(L, top);
  return matches;
}

/* core.readline(prompt[, completer]) -> line | nil at end of input | false when Ctrl-C abandoned the line.
 * completer(line up to the cursor) -> list of names the word before the cursor can become (TAB). */
static int l_readline(lua_State *L) {
  const char *prompt = luaL_optstring(L, 1, "> ");
  int completing = !lua_isnoneornil(L, 2);
  if (completing) luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  lua_setfield(L, LUA_REGISTRYINDEX, COMPLETER_KEY); /* nil clears it */
  rl_catch_signals = 0; /* libedit must not install its own SIGINT handler */
  rl_attempted_completion_function = completing ? complete_cb : NULL;
  rl_basic_word_break_characters = word_breaks;
  rl_completer_word_break_characters = word_breaks;
  rl_completion_append_character = '\0'; /* `ferry.proc` may go on with `.run`: no space after a name */
  complete_state = completing ? L : NULL;
  interrupted = 0;
  char *line = readline(prompt);
  complete_state = NULL;
  if (interrupted) { /* read() failed with EINTR (or Ctrl-C came as the line ended): abandon it */
    interrupted = 0;
    free(line);
    fputs("\n", stdout);
    fflush(stdout);
    lua_pushboolean(L, 0);
    return 1;
  }
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
  if (rc != 0) return ferry_sys_fail(L, rc, "save history", path);
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
                                 {"interrupt_pcall", l_interrupt_pcall},
                                 {"signals_install", l_signals_install},
                                 {"signal_pending", l_signal_pending},
                                 {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__gc", interrupt_gc}, {NULL, NULL}};
  static const luaL_Reg signals_meta[] = {{"__gc", signals_gc}, {NULL, NULL}};
  ferry_new_class(L, INTERRUPT_MT, meta, NULL);
  ferry_new_class(L, SIGNALS_MT, signals_meta, NULL);
  luaL_setfuncs(L, fns, 0);
}
