/* Internal interfaces shared by the C files of the ferry core. */
#ifndef FERRY_INTERNAL_H
#define FERRY_INTERNAL_H

#include <locale.h>
#include <stddef.h>
#include <stdint.h>

#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

/* Each bound concept registers its functions into the table on top of the stack. */
void ferry_open_loop(lua_State *L);       /* loop.c: run_once/handles/now_ms/time_ms/getpid */
void ferry_open_timer(lua_State *L);      /* timer.c: timer */
void ferry_open_proc(lua_State *L);       /* proc.c: proc_start and the process handle */
void ferry_open_b64(lua_State *L);        /* base64.c: b64_encode/b64_decode/b64_encoder/b64_decoder */
void ferry_open_sh(lua_State *L);         /* shquote.c: sh_quote/sh_join */
void ferry_open_hash(lua_State *L);       /* hash.c: sha256/sha256_new/sha256_file */
void ferry_open_tar_writer(lua_State *L); /* tar_writer.c: tar_writer */
void ferry_open_tar_reader(lua_State *L); /* tar_reader.c: tar_scan/tar_extract */
void ferry_open_fs(lua_State *L);         /* fs.c: lstat/readdir/no-follow writes */
void ferry_open_runfiles(lua_State *L);   /* runfiles.c: fs_lock/fs_mkdtemp/fs_remove_tree/getuid */
void ferry_open_search(lua_State *L);     /* search.c: search_dirs */
void ferry_open_hmac(lua_State *L);       /* hmac.c: hmac_sha256/hmac_equal/random_bytes */
void ferry_open_http_client(lua_State *L); /* http_client.c: http_request (libcurl on the loop) */
void ferry_open_http_server(lua_State *L); /* http_server.c: http_listen (libh2o on the loop) */
void ferry_open_tree(lua_State *L);       /* tree_object.c, tree_diff.c: tree_new/tree_path_less/tree_diff, the tree */
void ferry_open_tree_walk(lua_State *L);  /* tree_walk.c: tree_walk */
void ferry_open_tree_io(lua_State *L);    /* tree_io.c: tree:dump/tree:write/tree_load/tree_read */
void ferry_open_tree_listing(lua_State *L); /* tree_listing.c: tree_parse_listing */
void ferry_open_tree_tar(lua_State *L);   /* tree_tar.c: tar_scan_tree */
void ferry_open_exclude(lua_State *L);    /* exclude.c: exclude_matcher */
void ferry_open_signal(lua_State *L);      /* signal.c: signal_watch */

/* util.c: helpers shared by every file. */
/* Runtime failure in luv's convention: pushes nil, message, code and returns 3. */
int ferry_fail(lua_State *L, const char *code, const char *fmt, ...);
/* errno -> its name ("ENOENT") in buf, which is returned. */
const char *ferry_errname(int err, char *buf, size_t size);
/* Pushes nil, "<op> <path>: <strerror(err)>", errno name; returns 3. */
int ferry_sys_fail(lua_State *L, int err, const char *op, const char *path);
/* Argument idx must be a string (a number is refused): raises "<fn>: <name> must be a string, got <type>", or
 * with fn NULL Lua's "bad argument #idx to '<f>' (string expected, got <type>)". len may be NULL. */
const char *ferry_check_string(lua_State *L, int idx, const char *fn, const char *name, size_t *len);
/* The same, and neither empty nor holding a NUL byte (a path the OS takes): "<fn>: <name> is empty" etc. */
const char *ferry_check_path(lua_State *L, int idx, const char *fn, const char *name, size_t *len);
/* A stat mode's file type as ferry names it: "file" "dir" "symlink" "fifo" "socket" "char" "block" "other". */
const char *ferry_kind_name(unsigned mode);
/* n bytes as 2n lowercase hex digits and a NUL in out. */
void ferry_hex(const unsigned char *in, size_t n, char *out);
/* Register metatable `name` (once): the `meta` functions (__gc, __close, ...) and, unless NULL, `methods` as
 * its __index table. */
void ferry_new_class(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods);
/* Register metatable `name` (once) for handles with fields: the `meta` functions (an __index function,
 * __gc, ...) and `methods` as its "methods" table, which the __index function reaches with ferry_push_method. */
void ferry_new_handle_class(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods);
/* From an __index function: push the method `k` of the handle at index 1 (nil when none); returns 1. */
int ferry_push_method(lua_State *L, const char *k);
/* Push the Lua handle of a C object: a userdata holding `p`, with metatable `mt`. Returns its slot, which
 * the object keeps (its owner pointer) to clear when it goes before the handle. */
void **ferry_push_handle(lua_State *L, void *p, const char *mt);
/* Release a registry reference (LUA_NOREF: nothing) and set it to LUA_NOREF. */
void ferry_unref(lua_State *L, int *ref);
/* Options of a table at index `opts`; fn names the caller in errors ("<fn>: opts.<field> must be ..."). A string
 * (NULL when absent; the table keeps it alive), a number >= 0 such as milliseconds or bytes (dflt when absent). */
const char *ferry_opt_string(lua_State *L, int opts, const char *fn, const char *field);
uint64_t ferry_opt_uint(lua_State *L, int opts, const char *fn, const char *field, uint64_t dflt);
/* The main thread of L's state: callbacks keep it, since a coroutine may be gone when they run. */
lua_State *ferry_main_thread(lua_State *L);
/* A C.UTF-8 LC_CTYPE locale for uselocale, or (locale_t)0. */
locale_t ferry_utf8_locale(void);

#define FERRY_SHA256_LEN 32

/* loop.c: the libuv loop an engine's Lua state uses (the host's, or a private one). */
uv_loop_t *ferry_loop_get(lua_State *L);
void ferry_loop_set(lua_State *L, uv_loop_t *loop);

/* loop.c: the thread callbacks must run on: the one driving the loop, else `L` (a main thread). */
lua_State *ferry_loop_thread(lua_State *L);

/* loop.c: call the Lua function stored at registry ref `fn` with `nargs` values already pushed.
 * An error is recorded and stops the loop so the Lua side that runs the loop re-raises it. */
void ferry_loop_call(lua_State *L, int fn, int nargs);

/* loop.c: what an engine has running on its loop, in registries that hang off the state's loop context (one
 * engine per thread never shares them), so that an interrupt stops its children and closing the state closes
 * every handle. A member links itself with a ferry_node as its first field. */
typedef struct ferry_node {
  struct ferry_node *next, **pprev;
} ferry_node;
typedef enum ferry_registry { FERRY_PROCS, FERRY_TIMERS } ferry_registry;
ferry_node **ferry_loop_registry(lua_State *L, ferry_registry which);
void ferry_node_link(ferry_node **head, ferry_node *n);
void ferry_node_unlink(ferry_node *n); /* a no-op when it is not linked */

/* proc.c: stop every child of this state: TERM then KILL after the grace period, or KILL now. */
void ferry_proc_kill_all(lua_State *L, int hard);
/* proc.c, timer.c: the state is closing: kill every child, close every handle of the registry (freed by
 * their close callbacks, whenever the loop runs them) and never call Lua again. */
void ferry_proc_close_all(ferry_node **procs);
void ferry_timer_close_all(ferry_node **timers);

/* search.c: push the directories searched for a user's Lua files, in order: a list of {dir=, from=} with from
 * "FERRY_PATH" (each ';'-separated entry) or "config" ($XDG_CONFIG_HOME/ferry, else ~/.config/ferry). */
void ferry_push_search_dirs(lua_State *L);

/* fs.c: confined, never-follow filesystem access below a root (shared with tar_reader.c, tar_writer.c).
 * Functions return 0 or an fd on success and -errno on failure; `bad` receives the length of the prefix of
 * `rel` naming the component that failed (FERRY_FS_NO_COMPONENT when no component is to blame). */
#define FERRY_FS_NO_COMPONENT ((size_t)-1)
#define FERRY_TMP_PREFIX ".ferry-tmp-" /* core.TEMP_PREFIX: the safe writes' temp names start with it */
#define FERRY_FS_TMP_NAME 48 /* ".ferry-tmp-<run token>-<16 hex>" and its NUL */
#define FERRY_FS_KEY_LEN 96
typedef struct ferry_fs_tmp { /* a temp file beside its final name */
  int dirfd, fd;
  char name[FERRY_FS_TMP_NAME];
} ferry_fs_tmp;
struct stat;
int ferry_fs_rel_ok(const char *rel, size_t len); /* relative, '/'-separated, no empty/./.. parts */
int ferry_fs_walk(int rootfd, const char *rel, size_t len, int create, size_t *bad); /* dir fd of rel[0,len) */
int ferry_fs_open_parent(int rootfd, const char *rel, int create, const char **leaf, size_t *bad);
int ferry_fs_mkdir(int rootfd, const char *rel, int mode, size_t *bad); /* mode < 0: leave as made */
/* temp + rename; with noreplace an existing leaf fails with -EEXIST */
int ferry_fs_symlink_in(int dirfd, const char *leaf, const char *target, int noreplace);
void ferry_fs_tmp_init(ferry_fs_tmp *t);
int ferry_fs_tmp_create(ferry_fs_tmp *t, int dirfd); /* takes dirfd; O_CREAT|O_EXCL|O_NOFOLLOW */
int ferry_fs_tmp_write(ferry_fs_tmp *t, const void *data, size_t len);
/* chmod & 0777, rename (noreplace: -EEXIST over an existing leaf); frees */
int ferry_fs_tmp_commit(ferry_fs_tmp *t, const char *leaf, unsigned mode, int noreplace);
void ferry_fs_tmp_abort(ferry_fs_tmp *t);                                  /* remove the temp file; frees */
/* The 16 hex digits of this process's run token, in every temp name. */
const char *ferry_fs_run_token(void);
/* "<kind> <mode & 0777, octal> <size> <ino> <mtime, %.17g>" of st in buf (FERRY_FS_KEY_LEN bytes): the quick
 * key a snapshot keeps of a host file, to tell later whether it moved. */
void ferry_fs_quick_key(const struct stat *st, char *buf);
/* leaf in dirfd against `expect`, a quick key or "" for nothing there: 1 as expected, 0 moved, -errno. */
int ferry_fs_expect(int dirfd, const char *leaf, const char *expect);
/* Pushes nil, "<op> <root>/<rel>: <reason>", code; returns 3. */
int ferry_fs_fail(lua_State *L, int err, const char *op, const char *root, const char *rel, size_t bad);

/* tar_reader.c: reading an archive, shared with tree_tar.c. A UTF-8 locale is pinned while it is open, so names
 * are bytes end to end. */
struct archive;
struct archive_entry;
struct evp_md_ctx_st;
typedef struct ferry_tar_in {
  struct archive *a;
  struct evp_md_ctx_st *md;
  unsigned char *block; /* FERRY_TAR_BLOCK bytes */
  locale_t loc, old;
} ferry_tar_in;
#define FERRY_TAR_BLOCK (64 * 1024)
/* Open path (tar or empty) into in, zeroed before: 0, or pushes nil, "<fn> <path>: <reason>" or "bad archive:
 * <reason>", code and returns 3. Raises "<fn>: out of memory". */
int ferry_tar_open(lua_State *L, ferry_tar_in *in, const char *fn, const char *path);
void ferry_tar_close(ferry_tar_in *in); /* frees, and puts the locale back; again is a no-op */
/* The next header: 1 with *e set, 0 at the end, -1 on a bad archive (archive_error_string says why). */
int ferry_tar_next(ferry_tar_in *in, struct archive_entry **e);
/* Read the current entry's data, hashing it into md (32 bytes) and, when tmp is open, copying it there; *total
 * counts the content read against max. 0, -1 on a bad archive, -2 over the limit, or an errno (> 0). */
int ferry_tar_pump(ferry_tar_in *in, int64_t *total, lua_Integer max, unsigned char *md, ferry_fs_tmp *tmp);
/* Pushes nil, "bad archive: <reason>", "EINVAL"; returns 3. */
int ferry_tar_bad(lua_State *L, ferry_tar_in *in);

/* tree.c: a tree as other concepts stream it (tar_writer.c). Indexes are valid while ferry_tree_gen stays. */
typedef struct ferry_tree ferry_tree;
#define FERRY_TREE_MAX_PATH 65535 /* bytes of the longest path a tree holds */
ferry_tree *ferry_tree_test(lua_State *L, int idx); /* the tree at idx, in order, or NULL when it is no tree */
size_t ferry_tree_len(const ferry_tree *t);         /* entries, removed ones included */
/* Entry i's path (len bytes, not NUL-terminated), the caller's flags, and whether it was not removed. */
const char *ferry_tree_entry_at(const ferry_tree *t, size_t i, size_t *len, unsigned *flags, int *live);
/* What was sent of file i: its digest and size (md NULL: nothing, the digest becomes unknown). */
void ferry_tree_record_sha(ferry_tree *t, size_t i, const unsigned char *md, uint64_t size);
unsigned long ferry_tree_gen(const ferry_tree *t);

/* exclude.c: an exclude matcher as walks and scans ask it (1 excluded, 0 not, -1 out of memory). */
typedef struct ferry_exclude ferry_exclude;
ferry_exclude *ferry_exclude_test(lua_State *L, int idx); /* the matcher at idx, or NULL */
/* rel itself and the directories above it (a trailing '/' means a directory) */
int ferry_exclude_match(ferry_exclude *m, const char *rel, size_t len, int is_dir);
/* rel alone, its parent known not to be excluded (a walk never enters an excluded directory) */
int ferry_exclude_decide(ferry_exclude *m, const char *rel, size_t len, int is_dir);

/* The embedded Lua sources (generated from scripts/ and providers/), NULL-terminated. */
typedef struct ferry_embedded_file {
  const char *path; /* relative module path, e.g. "ferry/init.lua", "providers/local.lua" */
  const unsigned char *data;
  size_t len;
} ferry_embedded_file;
extern const ferry_embedded_file ferry_embedded_files[];

#endif
