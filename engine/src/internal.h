/* Internal interfaces shared by the C files of the ferry core. */
#ifndef FERRY_INTERNAL_H
#define FERRY_INTERNAL_H

#include <stddef.h>

#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

/* Each bound concept registers its functions into the table on top of the stack. */
void ferry_open_loop(lua_State *L);    /* loop.c: run/run_once/alive/handles/timer/now */
void ferry_open_proc(lua_State *L);    /* proc.c: proc_start and the process handle */
void ferry_open_b64(lua_State *L);     /* base64.c: b64_encode/b64_decode/b64_encoder/b64_decoder */
void ferry_open_sh(lua_State *L);      /* shquote.c: sh_quote/sh_join */
void ferry_open_hash(lua_State *L);    /* hash.c: sha256/sha256_new/sha256_file */
void ferry_open_archive(lua_State *L); /* archive.c: tar writer/reader */
void ferry_open_fs(lua_State *L);      /* fs.c: lstat/readdir/no-follow writes */

/* loop.c: the libuv loop an engine's Lua state uses (the host's, or a private one). */
uv_loop_t *ferry_loop_get(lua_State *L);
void ferry_loop_set(lua_State *L, uv_loop_t *loop);

/* loop.c: the thread callbacks must run on: the one driving the loop, else `L` (a main thread). */
lua_State *ferry_loop_thread(lua_State *L);

/* loop.c: call the Lua function stored at registry ref `fn` with `nargs` values already pushed.
 * An error is recorded and stops the loop so the Lua side that runs the loop re-raises it. */
void ferry_loop_call(lua_State *L, int fn, int nargs);

/* proc.c: stop every child of this state's loop: TERM then KILL after the grace period, or KILL now. */
void ferry_proc_kill_all(lua_State *L, int hard);

/* Runtime failure in luv's convention: pushes nil, message, code and returns 3. */
int ferry_fail(lua_State *L, const char *code, const char *fmt, ...);

/* The embedded Lua sources (generated from scripts/ and providers/), NULL-terminated. */
typedef struct ferry_embedded_file {
  const char *path; /* relative module path, e.g. "ferry/init.lua", "providers/local.lua" */
  const unsigned char *data;
  size_t len;
} ferry_embedded_file;
extern const ferry_embedded_file ferry_embedded_files[];

#endif
