/* Internal interfaces shared by the C files of the ferry core. */
#ifndef FERRY_INTERNAL_H
#define FERRY_INTERNAL_H

#include <stddef.h>

#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

/* Each bound concept registers its functions into the table on top of the stack. */
void ferry_open_loop(lua_State *L);    /* loop.c: run_once/handles/timer/now_ms/time_ms/getpid */
void ferry_open_proc(lua_State *L);    /* proc.c: proc_start and the process handle */
void ferry_open_b64(lua_State *L);     /* base64.c: b64_encode/b64_decode/b64_encoder/b64_decoder */
void ferry_open_sh(lua_State *L);      /* shquote.c: sh_quote/sh_join */
void ferry_open_hash(lua_State *L);    /* hash.c: sha256/sha256_new/sha256_file */
void ferry_open_archive(lua_State *L); /* archive.c: tar writer/reader */
void ferry_open_fs(lua_State *L);      /* fs.c: lstat/readdir/no-follow writes */
void ferry_open_hmac(lua_State *L);    /* hmac.c: hmac_sha256/hmac_equal/random_bytes */
void ferry_open_http_client(lua_State *L); /* http_client.c: http_request (libcurl on the loop) */
void ferry_open_http_server(lua_State *L); /* http_server.c: http_listen (libh2o on the loop) */

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

/* fs.c: confined, never-follow filesystem access below a root (shared with archive.c).
 * Functions return 0 or an fd on success and -errno on failure; `bad` receives the length of the prefix of
 * `rel` naming the component that failed (FERRY_FS_NO_COMPONENT when no component is to blame). */
#define FERRY_FS_NO_COMPONENT ((size_t)-1)
typedef struct ferry_fs_tmp { /* a temp file beside its final name */
  int dirfd, fd;
  char name[32];
} ferry_fs_tmp;
const char *ferry_errname(int err, char *buf, size_t size); /* errno -> "ENOENT" etc. */
int ferry_fs_rel_ok(const char *rel, size_t len); /* relative, '/'-separated, no empty/./.. parts */
int ferry_fs_walk(int rootfd, const char *rel, size_t len, int create, size_t *bad); /* dir fd of rel[0,len) */
int ferry_fs_open_parent(int rootfd, const char *rel, int create, const char **leaf, size_t *bad);
int ferry_fs_mkdir(int rootfd, const char *rel, int mode, size_t *bad); /* mode < 0: leave as made */
int ferry_fs_symlink_in(int dirfd, const char *leaf, const char *target); /* temp + rename */
void ferry_fs_tmp_init(ferry_fs_tmp *t);
int ferry_fs_tmp_create(ferry_fs_tmp *t, int dirfd); /* takes dirfd; O_CREAT|O_EXCL|O_NOFOLLOW */
int ferry_fs_tmp_write(ferry_fs_tmp *t, const void *data, size_t len);
int ferry_fs_tmp_commit(ferry_fs_tmp *t, const char *leaf, unsigned mode); /* chmod & 0777, rename; frees */
void ferry_fs_tmp_abort(ferry_fs_tmp *t);                                  /* remove the temp file; frees */
/* Pushes nil, "<op> <root>/<rel>: <reason>", code; returns 3. */
int ferry_fs_fail(lua_State *L, int err, const char *op, const char *root, const char *rel, size_t bad);

/* The embedded Lua sources (generated from scripts/ and providers/), NULL-terminated. */
typedef struct ferry_embedded_file {
  const char *path; /* relative module path, e.g. "ferry/init.lua", "providers/local.lua" */
  const unsigned char *data;
  size_t len;
} ferry_embedded_file;
extern const ferry_embedded_file ferry_embedded_files[];

#endif
