/* Reading a tar stream through libarchive: scan an archive, and extract the planned entries of one with the
 * confined writes of fs.c.
 *
 * core.tar_scan(path[, {max_bytes=1 GiB, max_entries=1e6}]) -> list of
 *   {name, kind, mode, size, mtime, linkname, sha256}  in archive order (names raw, as stored; kind: "file" |
 *   "dir" | "symlink" | "hardlink" | "char" | "block" | "fifo" | "socket" | "other"; sha256 for files)
 *   | nil, "archive exceeds the N byte limit at <name>", "EFBIG" | nil, "bad archive: <reason>", "EINVAL"
 * core.tar_extract(path, root, plan[, {max_bytes=1 GiB, before_commit=fn}]) -> count, moved | nil, msg, code
 *   plan: {[entry name] = {dest=rel, mode=int|nil (the entry's), sha256=hex|nil (checked before the rename),
 *   expect=quick key|""|nil, expect_sha256=hex|nil}}.
 *   Planned files are written to a temp name and renamed, symlinks likewise, dirs made (their modes applied
 *   last, so a read-only dir can still be filled). Hard links and special files in the plan fail "EINVAL",
 *   a planned name missing from the archive fails "ENOENT". Stops at the first error.
 *   With `expect`, what is at dest right before the rename (fstatat on the parent's fd) must still have that
 *   quick key (ferry_fs_quick_key; "" = nothing there, and the rename then never replaces anything), and with
 *   expect_sha256 that content too; else the temp file is dropped and dest goes to `moved` (a list; count
 *   counts only what was written). before_commit(dest) runs right before that check (a test's window).
 *
 * A UTF-8 locale is pinned while libarchive works, as in tar_writer.c: names are bytes end to end.
 */
#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <openssl/evp.h>

#include "internal.h"

#define READER_MT "ferry.tar_reader"
#define BLOCK (64 * 1024)
#define DEFAULT_MAX_BYTES ((lua_Integer)1 << 30)
#define DEFAULT_MAX_ENTRIES 1000000

/* opts[field] as a non-negative integer, or dflt. */
static lua_Integer opt_limit(lua_State *L, int opts, const char *fn, const char *field, lua_Integer dflt) {
  if (lua_isnoneornil(L, opts)) return dflt;
  lua_getfield(L, opts, field);
  lua_Integer v = dflt;
  if (!lua_isnil(L, -1)) {
    int ok;
    v = lua_tointegerx(L, -1, &ok); /* 2^31 (a float) is fine too */
    if (!ok || v < 0) luaL_error(L, "%s: opts.%s must be a non-negative integer", fn, field);
  }
  lua_pop(L, 1);
  return v;
}

/* ---- reading an archive (shared with tree_tar.c) ---- */

void ferry_tar_close(ferry_tar_in *in) {
  if (in->a) archive_read_free(in->a);
  in->a = NULL;
  EVP_MD_CTX_free(in->md);
  in->md = NULL;
  free(in->block);
  in->block = NULL;
  if (in->loc) {
    uselocale(in->old);
    freelocale(in->loc);
  }
  in->loc = (locale_t)0;
}

int ferry_tar_open(lua_State *L, ferry_tar_in *in, const char *fn, const char *path) {
  in->a = archive_read_new();
  in->md = EVP_MD_CTX_new();
  in->block = malloc(BLOCK);
  if (!in->a || !in->md || !in->block) return luaL_error(L, "%s: out of memory", fn);
  in->loc = ferry_utf8_locale();
  if (in->loc) in->old = uselocale(in->loc);
  archive_read_support_format_tar(in->a);
  archive_read_support_format_empty(in->a);
  struct stat st;
  if (stat(path, &st) < 0) return ferry_sys_fail(L, errno, fn, path);
  if (archive_read_open_filename(in->a, path, BLOCK) != ARCHIVE_OK) {
    int err = archive_errno(in->a);
    if (err > 0 && err != EILSEQ) return ferry_sys_fail(L, err, fn, path); /* EILSEQ: a format problem */
    return ferry_tar_bad(L, in);
  }
  return 0;
}

int ferry_tar_bad(lua_State *L, ferry_tar_in *in) {
  return ferry_fail(L, "EINVAL", "bad archive: %s", archive_error_string(in->a));
}

int ferry_tar_next(ferry_tar_in *in, struct archive_entry **e) {
  int rc = archive_read_next_header(in->a, e);
  if (rc == ARCHIVE_EOF) return 0;
  if (rc < ARCHIVE_WARN) return -1; /* ARCHIVE_WARN: a name not valid in the locale, kept as its bytes */
  if (archive_entry_pathname(*e) == NULL) {
    archive_set_error(in->a, EILSEQ, "an entry without a name");
    return -1;
  }
  return 1;
}

int ferry_tar_pump(ferry_tar_in *in, int64_t *total, lua_Integer max, unsigned char *md, ferry_fs_tmp *tmp) {
  if (!EVP_DigestInit_ex(in->md, EVP_sha256(), NULL)) return ENOMEM;
  for (;;) {
    la_ssize_t n = archive_read_data(in->a, in->block, BLOCK);
    if (n < 0) return -1;
    if (n == 0) break;
    *total += n;
    if (*total > max) return -2;
    if (!EVP_DigestUpdate(in->md, in->block, (size_t)n)) return ENOMEM;
    if (tmp && tmp->fd >= 0) {
      int err = ferry_fs_tmp_write(tmp, in->block, (size_t)n);
      if (err < 0) return -err;
    }
  }
  return EVP_DigestFinal_ex(in->md, md, NULL) ? 0 : ENOMEM;
}

/* ---- the reader of tar_scan and tar_extract ---- */

typedef struct tar_reader {
  ferry_tar_in in;
  int rootfd;
  ferry_fs_tmp tmp;
} tar_reader;

/* __close and __gc: runs however the call ends, so nothing leaks and the locale comes back. */
static int reader_release(lua_State *L) {
  tar_reader *r = luaL_checkudata(L, 1, READER_MT);
  ferry_fs_tmp_abort(&r->tmp);
  if (r->rootfd >= 0) close(r->rootfd);
  r->rootfd = -1;
  ferry_tar_close(&r->in);
  return 0;
}

/* Push a to-be-closed reader with path open, or push nil, msg, code and return NULL. */
static tar_reader *open_reader(lua_State *L, const char *fn, const char *path) {
  tar_reader *r = lua_newuserdatauv(L, sizeof *r, 0);
  memset(r, 0, sizeof *r);
  r->rootfd = -1;
  ferry_fs_tmp_init(&r->tmp);
  luaL_setmetatable(L, READER_MT);
  lua_toclose(L, -1);
  return ferry_tar_open(L, &r->in, fn, path) ? NULL : r;
}

static const char *entry_kind(struct archive_entry *e) {
  if (archive_entry_hardlink(e) != NULL) return "hardlink";
  return ferry_kind_name(archive_entry_filetype(e)); /* AE_IF* are the S_IF* values */
}

static int bad_archive(lua_State *L, tar_reader *r) { return ferry_tar_bad(L, &r->in); }

static int too_big(lua_State *L, lua_Integer max, const char *name) {
  return ferry_fail(L, "EFBIG", "archive exceeds the %I byte limit at %s", max, name);
}

static int pump_data(tar_reader *r, int64_t *total, lua_Integer max, unsigned char *md) {
  return ferry_tar_pump(&r->in, total, max, md, &r->tmp);
}

static int l_tar_scan(lua_State *L) {
  const char *path = ferry_check_path(L, 1, "tar_scan", "path", NULL);
  if (!lua_isnoneornil(L, 2) && !lua_istable(L, 2))
    return luaL_error(L, "tar_scan: opts must be a table, got %s", luaL_typename(L, 2));
  lua_Integer max = opt_limit(L, 2, "tar_scan", "max_bytes", DEFAULT_MAX_BYTES);
  lua_Integer max_entries = opt_limit(L, 2, "tar_scan", "max_entries", DEFAULT_MAX_ENTRIES);
  lua_settop(L, 2);
  tar_reader *r = open_reader(L, "tar_scan", path); /* 3 */
  if (r == NULL) return 3;
  lua_newtable(L); /* 4 */
  lua_Integer n = 0;
  int64_t total = 0;
  struct archive_entry *e;
  int rc;
  while ((rc = ferry_tar_next(&r->in, &e)) > 0) {
    const char *name = archive_entry_pathname(e);
    if (n >= max_entries)
      return ferry_fail(L, "EFBIG", "archive exceeds the %I entry limit at %s", max_entries, name);
    const char *kind = entry_kind(e);
    lua_createtable(L, 0, 8);
    lua_pushstring(L, name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, kind);
    lua_setfield(L, -2, "kind");
    lua_pushinteger(L, (lua_Integer)archive_entry_perm(e) & 07777);
    lua_setfield(L, -2, "mode");
    lua_pushinteger(L, (lua_Integer)archive_entry_size(e));
    lua_setfield(L, -2, "size");
    lua_pushnumber(L, (lua_Number)archive_entry_mtime(e) + (lua_Number)archive_entry_mtime_nsec(e) / 1e9);
    lua_setfield(L, -2, "mtime");
    const char *link = archive_entry_hardlink(e) ? archive_entry_hardlink(e) : archive_entry_symlink(e);
    if (link) {
      lua_pushstring(L, link);
      lua_setfield(L, -2, "linkname");
    }
    if (strcmp(kind, "file") == 0) {
      if (archive_entry_size(e) > max - total) return too_big(L, max, name);
      unsigned char md[FERRY_SHA256_LEN];
      char digest[2 * FERRY_SHA256_LEN + 1];
      int err = pump_data(r, &total, max, md);
      if (err == -1) return bad_archive(L, r);
      if (err == -2) return too_big(L, max, name);
      if (err) return luaL_error(L, "tar_scan: sha256 failed");
      ferry_hex(md, FERRY_SHA256_LEN, digest);
      lua_pushstring(L, digest);
      lua_setfield(L, -2, "sha256");
    }
    lua_rawseti(L, 4, ++n);
  }
  if (rc < 0) return bad_archive(L, r);
  return 1;
}

/* ---- extract ---- */

/* Check plan (index 3); misuse raises. */
static void check_plan(lua_State *L) {
  if (!lua_istable(L, 3)) luaL_error(L, "tar_extract: plan must be a table, got %s", luaL_typename(L, 3));
  lua_pushnil(L);
  while (lua_next(L, 3)) {
    size_t len;
    if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "tar_extract: plan keys must be entry names (strings)");
    const char *name = lua_tostring(L, -2);
    if (!lua_istable(L, -1)) luaL_error(L, "tar_extract: plan['%s'] must be a table", name);
    const char *dest = lua_getfield(L, -1, "dest") == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
    if (dest == NULL || !ferry_fs_rel_ok(dest, len))
      luaL_error(L, "tar_extract: plan['%s'].dest must be a relative path without empty, '.' or '..' components",
                 name);
    lua_pop(L, 1);
    int t = lua_getfield(L, -1, "mode");
    if (t != LUA_TNIL && (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0 || lua_tointeger(L, -1) > 07777))
      luaL_error(L, "tar_extract: plan['%s'].mode must be an integer in 0..07777", name);
    lua_pop(L, 1);
    static const char *const sums[] = {"sha256", "expect_sha256"};
    for (int i = 0; i < 2; i++) {
      t = lua_getfield(L, -1, sums[i]);
      if (t != LUA_TNIL && (t != LUA_TSTRING || lua_rawlen(L, -1) != 2 * FERRY_SHA256_LEN))
        luaL_error(L, "tar_extract: plan['%s'].%s must be 64 hex digits", name, sums[i]);
      lua_pop(L, 1);
    }
    t = lua_getfield(L, -1, "expect");
    if (t != LUA_TNIL && (t != LUA_TSTRING || lua_rawlen(L, -1) >= FERRY_FS_KEY_LEN))
      luaL_error(L, "tar_extract: plan['%s'].expect must be a quick key or \"\"", name);
    lua_pop(L, 2);
  }
}

typedef struct extract_ctx {
  tar_reader *r;
  const char *root;
  lua_Integer max;
  int64_t total;
  int hook; /* stack index of before_commit, or 0 */
} extract_ctx;

/* What one planned write expects at its dest (from the plan entry). */
typedef struct expectation {
  const char *key;    /* quick key, "" for nothing there, NULL for no check */
  const char *sha256; /* the content too, or NULL */
} expectation;

/* The sha256 of leaf in dirfd (never following a symlink) as hex in out; 0 or an errno. */
static int hash_leaf(tar_reader *r, int dirfd, const char *leaf, char *out) {
  int fd = openat(dirfd, leaf, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return errno;
  int err = EVP_DigestInit_ex(r->in.md, EVP_sha256(), NULL) ? 0 : ENOMEM;
  for (ssize_t n; err == 0 && (n = read(fd, r->in.block, BLOCK)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) err = errno;
    else if (!EVP_DigestUpdate(r->in.md, r->in.block, (size_t)n)) err = ENOMEM;
  }
  close(fd);
  unsigned char md[FERRY_SHA256_LEN];
  if (err == 0 && !EVP_DigestFinal_ex(r->in.md, md, NULL)) err = ENOMEM;
  if (err == 0) ferry_hex(md, FERRY_SHA256_LEN, out);
  return err;
}

/* Right before a write lands at dest (leaf in dirfd): the test hook, then the check. 1 go on, 0 moved, -errno. */
static int still_expected(lua_State *L, extract_ctx *x, int dirfd, const char *leaf, const char *dest,
                          const expectation *want) {
  if (x->hook) {
    lua_pushvalue(L, x->hook);
    lua_pushstring(L, dest);
    lua_call(L, 1, 0);
  }
  if (want->key == NULL) return 1;
  int same = ferry_fs_expect(dirfd, leaf, want->key);
  if (same == 1 && want->sha256 && want->key[0]) {
    char digest[2 * FERRY_SHA256_LEN + 1];
    int err = hash_leaf(x->r, dirfd, leaf, digest);
    if (err) return err == ENOENT || err == ELOOP ? 0 : -err;
    same = strcmp(digest, want->sha256) == 0;
  }
  return same;
}

/* Push "tar_extract <name> ->" for ferry_fs_fail messages. */
static const char *op_name(lua_State *L, const char *name) {
  return lua_pushfstring(L, "tar_extract %s ->", name);
}

/* Write the current file entry at dest. 0 written, -1 moved, or the count of pushed values (a failure). */
static int extract_file(lua_State *L, extract_ctx *x, struct archive_entry *e, const char *name, const char *dest,
                        int mode, const char *want_sha, const expectation *want) {
  tar_reader *r = x->r;
  const char *leaf;
  size_t bad;
  int dirfd = ferry_fs_open_parent(r->rootfd, dest, 1, &leaf, &bad);
  if (dirfd < 0) return ferry_fs_fail(L, -dirfd, op_name(L, name), x->root, dest, bad);
  int err = ferry_fs_tmp_create(&r->tmp, dirfd);
  if (err < 0) return ferry_fs_fail(L, -err, op_name(L, name), x->root, dest, FERRY_FS_NO_COMPONENT);
  unsigned char md[FERRY_SHA256_LEN];
  if (archive_entry_size(e) > x->max - x->total) return too_big(L, x->max, name);
  err = pump_data(r, &x->total, x->max, md);
  if (err == -1) return bad_archive(L, r);
  if (err == -2) return too_big(L, x->max, name);
  if (err) return ferry_fs_fail(L, err, op_name(L, name), x->root, dest, FERRY_FS_NO_COMPONENT);
  char digest[2 * FERRY_SHA256_LEN + 1];
  ferry_hex(md, FERRY_SHA256_LEN, digest);
  if (want_sha && strcmp(digest, want_sha) != 0)
    return ferry_fail(L, "EINVAL", "tar_extract %s: content differs from the scanned archive", name);
  struct timespec times[2] = {{0, UTIME_OMIT}, {archive_entry_mtime(e), archive_entry_mtime_nsec(e)}};
  futimens(r->tmp.fd, times);
  int go = still_expected(L, x, r->tmp.dirfd, leaf, dest, want);
  if (go < 0) return ferry_fs_fail(L, -go, op_name(L, name), x->root, dest, FERRY_FS_NO_COMPONENT);
  if (go == 0) {
    ferry_fs_tmp_abort(&r->tmp);
    return -1;
  }
  int noreplace = want->key != NULL && want->key[0] == '\0';
  err = ferry_fs_tmp_commit(&r->tmp, leaf, (unsigned)mode, noreplace);
  if ((err == -EEXIST && noreplace) || err == -ENOENT) return -1; /* ENOENT: the host removed the dir meanwhile */
  if (err < 0) return ferry_fs_fail(L, -err, op_name(L, name), x->root, dest, FERRY_FS_NO_COMPONENT);
  return 0;
}

/* Write the current symlink entry at dest, as extract_file. */
static int extract_symlink(lua_State *L, extract_ctx *x, struct archive_entry *e, const char *name,
                           const char *dest, const expectation *want) {
  const char *leaf;
  size_t bad;
  int dirfd = ferry_fs_open_parent(x->r->rootfd, dest, 1, &leaf, &bad);
  if (dirfd < 0) return ferry_fs_fail(L, -dirfd, op_name(L, name), x->root, dest, bad);
  x->r->tmp.dirfd = dirfd; /* closed by the reader's release if the hook raises */
  int go = still_expected(L, x, dirfd, leaf, dest, want);
  int noreplace = want->key != NULL && want->key[0] == '\0';
  int err = go <= 0 ? go : ferry_fs_symlink_in(dirfd, leaf, archive_entry_symlink(e), noreplace);
  ferry_fs_tmp_abort(&x->r->tmp);
  if (go == 0 || (err == -EEXIST && noreplace) || err == -ENOENT) return -1;
  if (err < 0) return ferry_fs_fail(L, -err, op_name(L, name), x->root, dest, FERRY_FS_NO_COMPONENT);
  return 0;
}

/* Write the current entry as planned (plan entry at the top of the stack). 0 written, -1 moved, or the count
 * of pushed values. */
static int extract_entry(lua_State *L, extract_ctx *x, struct archive_entry *e, const char *name, int dirs) {
  lua_getfield(L, -1, "dest");
  const char *dest = lua_tostring(L, -1); /* anchored by the plan */
  lua_pop(L, 1);
  int mode = lua_getfield(L, -1, "mode") == LUA_TNIL ? (int)(archive_entry_perm(e) & 0777)
                                                      : (int)(lua_tointeger(L, -1) & 0777);
  lua_pop(L, 1);
  lua_getfield(L, -1, "sha256");
  const char *want_sha = lua_tostring(L, -1);
  lua_getfield(L, -2, "expect");
  lua_getfield(L, -3, "expect_sha256");
  expectation want = {lua_tostring(L, -2), lua_tostring(L, -1)};
  lua_pop(L, 3); /* the strings stay anchored by the plan */
  const char *kind = entry_kind(e);
  if (strcmp(kind, "file") == 0) return extract_file(L, x, e, name, dest, mode, want_sha, &want);
  if (strcmp(kind, "symlink") == 0) return extract_symlink(L, x, e, name, dest, &want);
  if (strcmp(kind, "dir") != 0)
    return ferry_fail(L, "EINVAL", "tar_extract %s: a %s entry cannot be extracted", name, kind);
  size_t bad = FERRY_FS_NO_COMPONENT;
  int err = ferry_fs_mkdir(x->r->rootfd, dest, mode | 0700, &bad); /* owner-writable until the end */
  if (err < 0) return ferry_fs_fail(L, -err, op_name(L, name), x->root, dest, bad);
  lua_createtable(L, 2, 0);
  lua_pushstring(L, dest);
  lua_rawseti(L, -2, 1);
  lua_pushinteger(L, mode);
  lua_rawseti(L, -2, 2);
  lua_rawseti(L, dirs, (lua_Integer)lua_rawlen(L, dirs) + 1);
  return 0;
}

static int l_tar_extract(lua_State *L) {
  const char *path = ferry_check_path(L, 1, "tar_extract", "path", NULL);
  const char *root = ferry_check_path(L, 2, "tar_extract", "root", NULL);
  check_plan(L);
  if (!lua_isnoneornil(L, 4) && !lua_istable(L, 4))
    return luaL_error(L, "tar_extract: opts must be a table, got %s", luaL_typename(L, 4));
  extract_ctx x = {NULL, root, opt_limit(L, 4, "tar_extract", "max_bytes", DEFAULT_MAX_BYTES), 0, 0};
  lua_settop(L, 4);
  if (!lua_isnil(L, 4)) {
    lua_getfield(L, 4, "before_commit"); /* 5 */
    if (!lua_isnil(L, 5) && !lua_isfunction(L, 5))
      return luaL_error(L, "tar_extract: opts.before_commit must be a function, got %s", luaL_typename(L, 5));
    x.hook = lua_isnil(L, 5) ? 0 : 5;
  } else {
    lua_pushnil(L); /* 5 */
  }
  x.r = open_reader(L, "tar_extract", path); /* 6 */
  if (x.r == NULL) return 3;
  x.r->rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (x.r->rootfd < 0) return ferry_sys_fail(L, errno, "tar_extract", root);
  lua_newtable(L); /* 7: names handled */
  lua_newtable(L); /* 8: dirs made, {dest, mode}, for their modes at the end */
  lua_newtable(L); /* 9: dests not written because the host moved */
  lua_Integer count = 0;
  struct archive_entry *e;
  int rc;
  while ((rc = ferry_tar_next(&x.r->in, &e)) > 0) {
    const char *name = archive_entry_pathname(e);
    lua_pushstring(L, name);
    if (lua_rawget(L, 3) == LUA_TNIL) {
      lua_pop(L, 1);
      continue;
    }
    int done = extract_entry(L, &x, e, name, 8);
    if (done > 0) return done;
    if (done < 0) {
      lua_getfield(L, -1, "dest");
      lua_rawseti(L, 9, (lua_Integer)lua_rawlen(L, 9) + 1);
    } else {
      count++;
    }
    lua_pop(L, 1);
    lua_pushstring(L, name);
    lua_pushboolean(L, 1);
    lua_rawset(L, 7);
  }
  if (rc < 0) return bad_archive(L, x.r);
  lua_pushnil(L);
  while (lua_next(L, 3)) {
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, 7) == LUA_TNIL)
      return ferry_fail(L, "ENOENT", "tar_extract %s: planned entry %s is not in the archive", path,
                        lua_tostring(L, -2));
    lua_pop(L, 1);
  }
  for (lua_Integer i = (lua_Integer)lua_rawlen(L, 8); i > 0; i--) { /* deepest first */
    lua_rawgeti(L, 8, i);
    lua_rawgeti(L, -1, 1);
    lua_rawgeti(L, -2, 2);
    const char *dest = lua_tostring(L, -2);
    size_t bad;
    int fd = ferry_fs_walk(x.r->rootfd, dest, strlen(dest), 0, &bad);
    int err = fd < 0 ? -fd : fchmod(fd, (mode_t)lua_tointeger(L, -1)) < 0 ? errno : 0;
    if (fd >= 0) close(fd);
    if (err) return ferry_fs_fail(L, err, "tar_extract chmod", root, dest, bad);
    lua_pop(L, 3);
  }
  lua_pushinteger(L, count);
  lua_pushvalue(L, 9);
  return 2;
}

void ferry_open_tar_reader(lua_State *L) {
  static const luaL_Reg fns[] = {{"tar_scan", l_tar_scan}, {"tar_extract", l_tar_extract}, {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__close", reader_release}, {"__gc", reader_release}, {NULL, NULL}};
  ferry_new_class(L, READER_MT, meta, NULL);
  luaL_setfuncs(L, fns, 0);
}
