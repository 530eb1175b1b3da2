/* Child processes on libuv: spawn in a new process group, stream stdin with backpressure, drain stdout
 * and stderr concurrently, time out by killing the whole group (TERM, then KILL after a grace period).
 *
 * core.proc_start(opts, on_done) -> handle | nil, msg, code
 *   on_done(result) runs once the process has exited and stdout and stderr reached EOF.
 * handle:write(chunk, cb)  cb(err_or_nil) once the chunk is in the pipe (backpressure)
 * handle:close_stdin()
 * handle:kill(signame)     signals the whole process group
 * handle:pause_output() / handle:resume_output()   stop and restart reading stdout and stderr (the child
 *                          blocks once the pipes are full): a consumer slower than the child bounds its memory
 * handle.pid, handle.started_at (ms since the epoch)
 *
 * Stopping a child (a timeout, an interrupt): TERM to the group, KILL after the grace period.
 * With opts.eof_first the child is first told through its stdin: stdin is closed and the group is signalled only
 * if the child is still there after the grace period (a sandbox command's wrapper takes that EOF as the order to
 * stop the command, also where a signal from this host cannot reach it: over ssh, in a container). Such a
 * child's stdin is otherwise closed once both its outputs reached EOF (Lua keeps it open until then).
 *
 * Options are all checked before anything is spawned. A running child is in its state's process registry
 * (loop.c), so an interrupt stops this state's children only, and closing the state kills them and closes their
 * handles. The struct is freed by the last handle's close callback; the Lua handle and the struct point at each
 * other, so a handle whose process finished reads as finished, never as freed memory.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

extern char **environ;

#define PROC_MT "ferry.proc"
#define DEFAULT_MAX_OUTPUT (16 * 1024 * 1024)
#define DEFAULT_GRACE_MS 2000

typedef struct outbuf {
  char *data;
  size_t len, cap, max;
  int truncated;
  int eof;
  int cb_ref; /* on_stdout/on_stderr, or LUA_NOREF */
} outbuf;

typedef struct proc {
  ferry_node node; /* the state's process registry, while it runs: first, see internal.h */
  uv_process_t process;
  uv_pipe_t in, out, err;
  uv_timer_t timer;
  lua_State *L; /* main thread; NULL once the state closes */
  int done_ref;
  outbuf obuf, ebuf;
  int open_handles; /* the struct is freed when the last handle closed */
  int exited, finished, in_closed;
  int64_t exit_status;
  int term_signal;
  int timed_out;
  int stage;     /* how far stopping went: 0 running, 1 stdin closed (eof_first), 2 TERM sent, 3 KILL sent */
  int eof_first; /* stop by closing stdin first */
  uint64_t timeout_ms, grace_ms;
  uint64_t start_hr;
  int64_t started_at;
  int pid;
  struct proc **owner; /* the Lua handle's pointer, cleared when the struct is freed */
} proc;

typedef struct write_req {
  uv_write_t req;
  proc *p;
  int data_ref, cb_ref;
} write_req;

static void handle_close_cb(uv_handle_t *h) {
  proc *p = h->data;
  if (--p->open_handles == 0) {
    if (p->owner) *p->owner = NULL;
    free(p->obuf.data);
    free(p->ebuf.data);
    free(p);
  }
}

static void close_handle(proc *p, uv_handle_t *h) {
  if (!uv_is_closing(h)) uv_close(h, handle_close_cb);
  (void)p;
}

/* Close whatever is still open; the struct goes with the last handle. */
static void close_handles(proc *p) {
  uv_handle_t *handles[] = {(uv_handle_t *)&p->in, (uv_handle_t *)&p->out, (uv_handle_t *)&p->err,
                            (uv_handle_t *)&p->timer, (uv_handle_t *)&p->process};
  for (size_t i = 0; i < sizeof handles / sizeof handles[0]; i++) close_handle(p, handles[i]);
}

static void stop_timer_cb(uv_timer_t *h);

static void signal_group(proc *p, int sig) {
  if (p->pid > 0) {
    if (kill(-p->pid, sig) != 0 && !p->exited) kill(p->pid, sig);
  }
}

static const char *signal_name(int sig) {
  switch (sig) {
  case SIGHUP: return "SIGHUP";
  case SIGINT: return "SIGINT";
  case SIGQUIT: return "SIGQUIT";
  case SIGILL: return "SIGILL";
  case SIGABRT: return "SIGABRT";
  case SIGFPE: return "SIGFPE";
  case SIGKILL: return "SIGKILL";
  case SIGSEGV: return "SIGSEGV";
  case SIGPIPE: return "SIGPIPE";
  case SIGALRM: return "SIGALRM";
  case SIGTERM: return "SIGTERM";
  case SIGUSR1: return "SIGUSR1";
  case SIGUSR2: return "SIGUSR2";
  case SIGBUS: return "SIGBUS";
  default: return NULL;
  }
}

static int signal_number(const char *name) {
  static const int sigs[] = {SIGHUP,  SIGINT,  SIGQUIT, SIGILL,  SIGABRT, SIGFPE, SIGKILL,
                             SIGSEGV, SIGPIPE, SIGALRM, SIGTERM, SIGUSR1, SIGUSR2, SIGBUS};
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
    if (strcmp(signal_name(sigs[i]), name) == 0 || strcmp(signal_name(sigs[i]) + 3, name) == 0)
      return sigs[i];
  return 0;
}

static void push_outbuf(lua_State *L, outbuf *b) {
  lua_pushlstring(L, b->data ? b->data : "", b->len);
}

/* Deliver the result once: exit seen and both output pipes at EOF. */
static void maybe_finish(proc *p) {
  if (p->finished || !p->exited || !p->obuf.eof || !p->ebuf.eof) return;
  p->finished = 1;
  ferry_node_unlink(&p->node);
  uv_timer_stop(&p->timer);
  close_handle(p, (uv_handle_t *)&p->timer);
  close_handle(p, (uv_handle_t *)&p->process);
  if (p->L == NULL) return; /* the state closed: nobody to tell */
  lua_State *L = ferry_loop_thread(p->L);
  lua_createtable(L, 0, 10);
  lua_pushinteger(L, p->term_signal ? 128 + p->term_signal : p->exit_status);
  lua_setfield(L, -2, "code");
  if (p->term_signal) {
    const char *n = signal_name(p->term_signal);
    if (n)
      lua_pushstring(L, n);
    else
      lua_pushfstring(L, "SIG%d", p->term_signal);
    lua_setfield(L, -2, "signal");
  }
  lua_pushboolean(L, p->timed_out);
  lua_setfield(L, -2, "timed_out");
  push_outbuf(L, &p->obuf);
  lua_setfield(L, -2, "stdout");
  push_outbuf(L, &p->ebuf);
  lua_setfield(L, -2, "stderr");
  lua_pushboolean(L, p->obuf.truncated || p->ebuf.truncated);
  lua_setfield(L, -2, "truncated");
  lua_pushinteger(L, p->pid);
  lua_setfield(L, -2, "pid");
  lua_pushinteger(L, p->started_at);
  lua_setfield(L, -2, "started_at");
  lua_pushnumber(L, (lua_Number)(uv_hrtime() - p->start_hr) / 1e6);
  lua_setfield(L, -2, "duration_ms");
  int done = p->done_ref;
  p->done_ref = LUA_NOREF;
  if (p->obuf.cb_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, p->obuf.cb_ref);
  if (p->ebuf.cb_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, p->ebuf.cb_ref);
  p->obuf.cb_ref = p->ebuf.cb_ref = LUA_NOREF;
  ferry_loop_call(L, done, 1);
  luaL_unref(L, LUA_REGISTRYINDEX, done);
}

static void exit_cb(uv_process_t *h, int64_t status, int sig) {
  proc *p = h->data;
  p->exited = 1;
  p->exit_status = status;
  p->term_signal = sig;
  maybe_finish(p);
}

static void close_stdin(proc *p);

/* One step of stopping the child; the timer brings the next one after the grace period. */
static void stop_step(proc *p) {
  if (p->finished) return;
  p->stage++;
  if (p->stage == 1 && !p->eof_first) p->stage = 2;
  if (p->stage == 1) {
    close_stdin(p);
  } else if (p->stage == 2) {
    close_stdin(p);
    signal_group(p, SIGTERM);
  } else {
    signal_group(p, SIGKILL);
    return;
  }
  uv_timer_start(&p->timer, stop_timer_cb, p->grace_ms, 0);
}

static void stop_timer_cb(uv_timer_t *h) { stop_step(h->data); }

/* Start stopping the child unless that has begun already. */
static void begin_stop(proc *p) {
  if (p->finished || p->stage > 0) return;
  uv_timer_stop(&p->timer);
  stop_step(p);
}

static void timer_cb(uv_timer_t *h) {
  proc *p = h->data;
  p->timed_out = 1;
  begin_stop(p);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  static _Thread_local char slab[65536]; /* each read is consumed before the next one */
  buf->base = slab;
  buf->len = sizeof slab;
}

static void keep_output(outbuf *b, const char *data, size_t n) {
  size_t room = b->max > b->len ? b->max - b->len : 0;
  if (n > room) {
    b->truncated = 1;
    n = room;
  }
  if (n == 0) return;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n) cap *= 2;
    if (cap > b->max) cap = b->max;
    char *nd = realloc(b->data, cap);
    if (!nd) {
      b->truncated = 1;
      return;
    }
    b->data = nd;
    b->cap = cap;
  }
  memcpy(b->data + b->len, data, n);
  b->len += n;
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  proc *p = s->data;
  outbuf *b = (s == (uv_stream_t *)&p->out) ? &p->obuf : &p->ebuf;
  if (nread > 0) {
    if (b->cb_ref != LUA_NOREF) {
      lua_State *L = ferry_loop_thread(p->L);
      lua_pushlstring(L, buf->base, (size_t)nread);
      ferry_loop_call(L, b->cb_ref, 1);
    } else {
      keep_output(b, buf->base, (size_t)nread);
    }
  } else if (nread < 0) {
    b->eof = 1;
    uv_read_stop(s);
    close_handle(p, (uv_handle_t *)s);
    /* A child stopped through its stdin holds it open until it is done: when both outputs ended it is, and a
     * program between us and it (a filter in a cmd: prefix) may be waiting for that EOF before it exits. */
    if (p->eof_first && p->obuf.eof && p->ebuf.eof) close_stdin(p);
    maybe_finish(p);
  }
}

static proc *check_proc(lua_State *L) {
  proc **ud = luaL_checkudata(L, 1, PROC_MT);
  return *ud;
}

static void write_cb(uv_write_t *req, int status) {
  write_req *w = (write_req *)req;
  if (w->p->L == NULL) { /* cancelled because the state closed: its references went with it */
    free(w);
    return;
  }
  lua_State *L = ferry_loop_thread(w->p->L);
  luaL_unref(L, LUA_REGISTRYINDEX, w->data_ref);
  int cb = w->cb_ref;
  free(w);
  if (cb == LUA_NOREF) return;
  if (status == 0)
    lua_pushnil(L);
  else
    lua_pushfstring(L, "write to stdin: %s", uv_strerror(status));
  ferry_loop_call(L, cb, 1);
  luaL_unref(L, LUA_REGISTRYINDEX, cb);
}

/* handle:write(chunk, cb) -> true | nil, msg, code */
static int l_write(lua_State *L) {
  proc *p = check_proc(L);
  size_t n;
  const char *data = luaL_checklstring(L, 2, &n);
  if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TFUNCTION);
  if (!p || p->in_closed) return ferry_fail(L, "EPIPE", "write to stdin: stdin is closed");
  write_req *w = calloc(1, sizeof *w);
  if (!w) return luaL_error(L, "ferry: out of memory");
  w->p = p;
  lua_pushvalue(L, 2);
  w->data_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  w->cb_ref = LUA_NOREF;
  if (!lua_isnoneornil(L, 3)) {
    lua_pushvalue(L, 3);
    w->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  uv_buf_t buf = uv_buf_init((char *)data, (unsigned int)n);
  int rc = uv_write(&w->req, (uv_stream_t *)&p->in, &buf, 1, write_cb);
  if (rc != 0) {
    luaL_unref(L, LUA_REGISTRYINDEX, w->data_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, w->cb_ref);
    free(w);
    return ferry_fail(L, uv_err_name(rc), "write to stdin: %s", uv_strerror(rc));
  }
  lua_pushboolean(L, 1);
  return 1;
}

static void close_stdin(proc *p) {
  if (p->in_closed) return;
  p->in_closed = 1;
  close_handle(p, (uv_handle_t *)&p->in);
}

/* handle:close_stdin(): EOF for the child once queued writes are flushed. */
static int l_close_stdin(lua_State *L) {
  proc *p = check_proc(L);
  if (p) close_stdin(p);
  return 0;
}

/* handle:kill([signame]) -> true: signal the process group (default SIGTERM). */
static int l_kill(lua_State *L) {
  proc *p = check_proc(L);
  const char *name = luaL_optstring(L, 2, "SIGTERM");
  int sig = signal_number(name);
  if (sig == 0) return luaL_error(L, "kill: unknown signal '%s'", name);
  if (p && !p->finished) signal_group(p, sig);
  lua_pushboolean(L, 1);
  return 1;
}

static void set_reading(proc *p, int on) {
  uv_stream_t *pipes[2] = {(uv_stream_t *)&p->out, (uv_stream_t *)&p->err};
  outbuf *bufs[2] = {&p->obuf, &p->ebuf};
  for (int i = 0; i < 2; i++) {
    if (bufs[i]->eof) continue;
    if (on)
      uv_read_start(pipes[i], alloc_cb, read_cb);
    else
      uv_read_stop(pipes[i]);
  }
}

/* handle:pause_output(), handle:resume_output() */
static int l_pause_output(lua_State *L) {
  proc *p = check_proc(L);
  if (p && !p->finished) set_reading(p, 0);
  return 0;
}

static int l_resume_output(lua_State *L) {
  proc *p = check_proc(L);
  if (p && !p->finished) set_reading(p, 1);
  return 0;
}

static int l_index(lua_State *L) {
  proc *p = check_proc(L);
  const char *k = luaL_checkstring(L, 2);
  if (p && strcmp(k, "pid") == 0) {
    lua_pushinteger(L, p->pid);
  } else if (p && strcmp(k, "started_at") == 0) {
    lua_pushinteger(L, p->started_at);
  } else {
    return ferry_push_method(L, k);
  }
  return 1;
}

/* The Lua handle went away: the process keeps running to its end, but nothing is told of it. */
static int l_gc(lua_State *L) {
  proc **ud = luaL_checkudata(L, 1, PROC_MT);
  proc *p = *ud;
  *ud = NULL;
  if (p) {
    p->owner = NULL;
    if (!p->finished) close_stdin(p);
  }
  return 0;
}

void ferry_proc_kill_all(lua_State *L, int hard) {
  for (ferry_node *n = *ferry_loop_registry(L, FERRY_PROCS); n; n = n->next) {
    proc *p = (proc *)n;
    if (hard) {
      signal_group(p, SIGKILL);
      continue;
    }
    if (p->stage == 0) p->timed_out = 1;
    begin_stop(p);
  }
}

void ferry_proc_close_all(ferry_node **procs) {
  while (*procs) {
    proc *p = (proc *)*procs;
    ferry_node_unlink(&p->node);
    /* A child stopped through its stdin gets its EOF (the state is going: no grace period to wait out) and
     * TERM, which a sandbox command's wrapper outlives while its watcher stops the command; KILL would end the
     * watcher first. */
    signal_group(p, p->eof_first ? SIGTERM : SIGKILL);
    p->L = NULL;
    p->finished = 1;
    if (p->owner) *p->owner = NULL; /* the Lua handle may be finalized after this: it must not see p */
    p->owner = NULL;
    p->in_closed = 1;
    close_handles(p);
  }
}

/* ---- argument parsing ---- */

static char **build_argv(lua_State *L, int opts) {
  if (lua_getfield(L, opts, "argv") != LUA_TTABLE)
    luaL_error(L, "proc.run: opts.argv must be a non-empty list of strings");
  lua_Integer n = luaL_len(L, -1);
  if (n < 1) luaL_error(L, "proc.run: opts.argv must be a non-empty list of strings");
  char **argv = lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + 1), 0);
  for (lua_Integer i = 1; i <= n; i++) {
    if (lua_geti(L, -2, i) != LUA_TSTRING)
      luaL_error(L, "proc.run: opts.argv[%d] must be a string, got %s", (int)i, luaL_typename(L, -1));
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    if (strlen(s) != len) luaL_error(L, "proc.run: opts.argv[%d] contains a NUL byte", (int)i);
    argv[i - 1] = (char *)s; /* kept alive by opts.argv */
    lua_pop(L, 1);
  }
  argv[n] = NULL;
  lua_remove(L, -2);
  return argv; /* userdata left on the stack */
}

static int env_key_of(const char *entry, size_t *keylen) {
  const char *eq = strchr(entry, '=');
  if (!eq) return 0;
  *keylen = (size_t)(eq - entry);
  return 1;
}

/* Builds "K=V" strings in a Lua table (kept on the stack) and returns a NULL-terminated array. */
static char **build_env(lua_State *L, int opts) {
  int clear = (lua_getfield(L, opts, "clear_env"), lua_toboolean(L, -1));
  lua_pop(L, 1);
  int t = lua_getfield(L, opts, "env");
  if (t != LUA_TNIL && t != LUA_TTABLE) luaL_error(L, "proc.run: opts.env must be a table");
  if (t == LUA_TNIL && !clear) {
    lua_pop(L, 1);
    lua_pushnil(L);
    return NULL; /* inherit */
  }
  int env = lua_gettop(L);
  lua_newtable(L); /* merged: key -> "K=V" */
  int merged = lua_gettop(L);
  if (!clear) {
    for (char **e = environ; *e; e++) {
      size_t kl;
      if (!env_key_of(*e, &kl)) continue;
      lua_pushlstring(L, *e, kl);
      lua_pushstring(L, *e);
      lua_rawset(L, merged);
    }
  }
  if (t == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, env)) {
      if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "proc.run: opts.env keys must be strings");
      size_t klen;
      const char *k = lua_tolstring(L, -2, &klen);
      if (*k == '\0' || strchr(k, '=') || strlen(k) != klen)
        luaL_error(L, "proc.run: opts.env key '%s' is not a valid name", k);
      lua_pushvalue(L, -2);
      if (lua_type(L, -2) == LUA_TBOOLEAN && !lua_toboolean(L, -2)) {
        lua_pushnil(L); /* false removes the variable */
      } else if (lua_type(L, -2) == LUA_TSTRING || lua_type(L, -2) == LUA_TNUMBER) {
        size_t vlen;
        const char *v = lua_tolstring(L, -2, &vlen);
        if (strlen(v) != vlen) luaL_error(L, "proc.run: opts.env.%s contains a NUL byte", k);
        lua_pushfstring(L, "%s=%s", k, v);
      } else {
        luaL_error(L, "proc.run: opts.env.%s must be a string, number or false", k);
      }
      lua_rawset(L, merged);
      lua_pop(L, 1);
    }
  }
  size_t count = 0;
  lua_pushnil(L);
  while (lua_next(L, merged)) {
    count++;
    lua_pop(L, 1);
  }
  char **arr = lua_newuserdatauv(L, sizeof(char *) * (count + 1), 1);
  lua_pushvalue(L, merged);
  lua_setiuservalue(L, -2, 1); /* the strings live as long as the array */
  size_t i = 0;
  lua_pushnil(L);
  while (lua_next(L, merged)) {
    arr[i++] = (char *)lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  arr[i] = NULL;
  lua_replace(L, env);
  lua_settop(L, env);
  return arr;
}


/* Push opts[field], a function or nil; misuse raises. Returns the stack index. */
static int opt_fn(lua_State *L, int opts, const char *field) {
  int t = lua_getfield(L, opts, field);
  if (t != LUA_TNIL && t != LUA_TFUNCTION) luaL_error(L, "proc.run: opts.%s must be a function", field);
  return lua_gettop(L);
}

static int ref_or_none(lua_State *L, int idx) {
  if (lua_isnil(L, idx)) return LUA_NOREF;
  lua_pushvalue(L, idx);
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

/* uv_spawn failed: the process handle still needs closing too (uv_spawn initialised it). */
static int spawn_failed(lua_State *L, proc *p, int rc, const char *file, const char *cwd) {
  luaL_unref(L, LUA_REGISTRYINDEX, p->done_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, p->obuf.cb_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, p->ebuf.cb_ref);
  close_handles(p);
  if (cwd && rc == UV_ENOENT && access(cwd, F_OK) != 0)
    return ferry_fail(L, uv_err_name(rc), "spawn %s: cwd %s: %s", file, cwd, uv_strerror(rc));
  return ferry_fail(L, uv_err_name(rc), "spawn %s: %s", file, uv_strerror(rc));
}

/* core.proc_start(opts, on_done) -> handle | nil, msg, code
 * opts as ferry.proc.run, with opts.stdin true/false (piped or /dev/null); Lua feeds it.
 * Every argument is checked before anything is spawned: misuse raises with no child started. */
static int l_proc_start(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  char **argv = build_argv(L, 1);
  char **env = build_env(L, 1);
  const char *cwd = NULL;
  int t = lua_getfield(L, 1, "cwd");
  if (t == LUA_TSTRING) {
    size_t len;
    cwd = lua_tolstring(L, -1, &len);
    if (strlen(cwd) != len) luaL_error(L, "proc.run: opts.cwd contains a NUL byte");
  } else if (t != LUA_TNIL) {
    luaL_error(L, "proc.run: opts.cwd must be a string");
  }
  uint64_t timeout = ferry_opt_uint(L, 1, "proc.run", "timeout_ms", 0);
  uint64_t grace = ferry_opt_uint(L, 1, "proc.run", "kill_grace_ms", DEFAULT_GRACE_MS);
  uint64_t max_output = ferry_opt_uint(L, 1, "proc.run", "max_output", DEFAULT_MAX_OUTPUT);
  lua_getfield(L, 1, "stdin");
  int want_stdin = lua_toboolean(L, -1);
  lua_getfield(L, 1, "eof_first");
  int eof_first = lua_toboolean(L, -1) && want_stdin;
  lua_pop(L, 2);
  int on_stdout = opt_fn(L, 1, "on_stdout");
  int on_stderr = opt_fn(L, 1, "on_stderr");

  uv_loop_t *loop = ferry_loop_get(L);
  proc **ud = lua_newuserdatauv(L, sizeof *ud, 0); /* before the struct: raising later leaks nothing */
  int ud_idx = lua_gettop(L);
  *ud = NULL;
  luaL_setmetatable(L, PROC_MT);
  lua_pushvalue(L, 2);
  int done_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  int out_ref = ref_or_none(L, on_stdout), err_ref = ref_or_none(L, on_stderr);
  proc *p = calloc(1, sizeof *p);
  if (!p) {
    luaL_unref(L, LUA_REGISTRYINDEX, done_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, out_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, err_ref);
    return luaL_error(L, "ferry: out of memory");
  }
  p->done_ref = done_ref;
  p->obuf.cb_ref = out_ref;
  p->ebuf.cb_ref = err_ref;
  p->L = ferry_main_thread(L);
  p->obuf.max = p->ebuf.max = (size_t)max_output;
  p->timeout_ms = timeout;
  p->grace_ms = grace;
  p->eof_first = eof_first;
  uv_pipe_init(loop, &p->in, 0);
  uv_pipe_init(loop, &p->out, 0);
  uv_pipe_init(loop, &p->err, 0);
  uv_timer_init(loop, &p->timer);
  p->in.data = p->out.data = p->err.data = p->timer.data = p->process.data = p;
  p->open_handles = 5; /* uv_spawn initialises the process handle even when it fails */

  uv_stdio_container_t stdio[3];
  stdio[0].flags = want_stdin ? (UV_CREATE_PIPE | UV_READABLE_PIPE) : UV_IGNORE;
  stdio[0].data.stream = (uv_stream_t *)&p->in;
  stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[1].data.stream = (uv_stream_t *)&p->out;
  stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[2].data.stream = (uv_stream_t *)&p->err;

  uv_process_options_t po;
  memset(&po, 0, sizeof po);
  po.exit_cb = exit_cb;
  po.file = argv[0];
  po.args = argv;
  po.env = env;
  po.cwd = cwd;
  po.flags = UV_PROCESS_DETACHED; /* setsid: its own process group, so a timeout kills the tree */
  po.stdio_count = 3;
  po.stdio = stdio;

  p->start_hr = uv_hrtime();
  uv_timeval64_t tv;
  uv_gettimeofday(&tv);
  p->started_at = tv.tv_sec * 1000 + tv.tv_usec / 1000;
  int rc = uv_spawn(loop, &p->process, &po);
  if (rc != 0) return spawn_failed(L, p, rc, argv[0], cwd);
  /* From here on nothing raises: the child runs and the struct is the loop's until it finishes. */
  p->pid = p->process.pid;
  if (!want_stdin) {
    p->in_closed = 1;
    close_handle(p, (uv_handle_t *)&p->in);
  }
  uv_read_start((uv_stream_t *)&p->out, alloc_cb, read_cb);
  uv_read_start((uv_stream_t *)&p->err, alloc_cb, read_cb);
  if (timeout > 0) uv_timer_start(&p->timer, timer_cb, timeout, 0);
  ferry_node_link(ferry_loop_registry(L, FERRY_PROCS), &p->node);
  *ud = p;
  p->owner = ud;
  lua_pushvalue(L, ud_idx);
  return 1;
}

void ferry_open_proc(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"write", l_write},           {"close_stdin", l_close_stdin},     {"kill", l_kill},
      {"pause_output", l_pause_output}, {"resume_output", l_resume_output}, {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__index", l_index}, {"__gc", l_gc}, {NULL, NULL}};
  ferry_new_handle_class(L, PROC_MT, meta, methods);
  lua_pushcfunction(L, l_proc_start);
  lua_setfield(L, -2, "proc_start");
}
