/* Tar streams through libarchive: write a workspace as a pax archive in chunks, scan an archive, extract the
 * planned entries of one with the confined writes of fs.c.
 *
 * core.tar_writer(root, names[, {follow_symlinks=false, hash=false}]) -> writer | nil, "tar_writer <root>: <reason>",
 *   code
 *   names: relative paths in emit order (dirs before their contents), archived exactly as given (no "./"):
 *   files (streamed 64 KiB at a time), dirs, symlinks; other kinds are skipped with a warning. pax-restricted,
 *   uid/gid 0, no user/group names, xattrs or ACLs. follow_symlinks archives what a symlink points to.
 *   writer:read() -> next chunk (up to ~200 KiB) | nil at the end; raises on a libarchive failure
 *   writer:bytes() -> bytes returned by read() so far; writer:warnings() -> list of strings
 *   writer:digests() (with hash) -> {name = sha256 hex} of each file archived in full so far: the SHA-256 of
 *   the content bytes the archive carries (zeros included where a file shrank mid-way), computed as they are
 *   read, so nothing reads a file twice; raises "tar_writer: digests: the writer was made without opts.hash".
 *   writer:close() (also on gc): stops early and releases the open file.
 * core.tar_scan(path[, {max_bytes=1 GiB, max_entries=1e6}]) -> list of
 *   {name, kind, mode, size, mtime, linkname, sha256}  in archive order (names raw, as stored; kind: "file" |
 *   "dir" | "symlink" | "hardlink" | "char" | "block" | "fifo" | "socket" | "other"; sha256 for files)
 *   | nil, "archive exceeds the N byte limit at <name>", "EFBIG" | nil, "bad archive: <reason>", "EINVAL"
 * core.tar_extract(path, root, plan[, {max_bytes=1 GiB}]) -> count | nil, msg, code
 *   plan: {[entry name] = {dest=rel, mode=int|nil (the entry's), sha256=hex|nil (checked before the rename)}}.
 *   Planned files are written to a temp name and renamed, symlinks likewise, dirs made (their modes applied
 *   last, so a read-only dir can still be filled). Hard links and special files in the plan fail "EINVAL",
 *   a planned name missing from the archive fails "ENOENT". Stops at the first error.
 *
 * libarchive converts names between the locale's charset and the UTF-8 of pax records, so a UTF-8 locale is
 * pinned while it works: names are bytes end to end (invalid UTF-8 goes out with hdrcharset=BINARY).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <locale.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <openssl/evp.h>

#include "internal.h"

#define WRITER_MT "ferry.tar_writer"
#define READER_MT "ferry.tar_reader"
#define BLOCK (64 * 1024)
#define CHUNK (128 * 1024)
#define DEFAULT_MAX_BYTES ((lua_Integer)1 << 30)
#define DEFAULT_MAX_ENTRIES 1000000
#define DIGEST_LEN 32

static locale_t utf8_locale(void) {
  locale_t loc = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
  return loc ? loc : newlocale(LC_CTYPE_MASK, "C.utf8", (locale_t)0);
}

static const char *check_string(lua_State *L, int idx, const char *fn, const char *name, size_t *len) {
  if (lua_type(L, idx) != LUA_TSTRING)
    luaL_error(L, "%s: %s must be a string, got %s", fn, name, luaL_typename(L, idx));
  const char *s = lua_tolstring(L, idx, len);
  if (*len == 0) luaL_error(L, "%s: %s is empty", fn, name);
  if (strlen(s) != *len) luaL_error(L, "%s: %s contains a NUL byte", fn, name);
  return s;
}

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

static int sys_fail(lua_State *L, int err, const char *fmt, const char *a, const char *b) {
  char code[64];
  return ferry_fail(L, ferry_errname(err, code, sizeof code), fmt, a, b, strerror(err));
}

/* ================================ writer ================================ */

typedef struct tar_writer {
  struct archive *a; /* NULL once finished, failed or closed */
  struct archive_entry *entry;
  int rootfd;
  char *root;
  int follow;
  int state;             /* WRITING, DONE, FAILED, CLOSED */
  lua_Integer next, count; /* next name to archive (1-based), number of names */
  lua_Integer cur;       /* the file being streamed */
  int fd;                /* its descriptor, or -1 */
  int64_t remaining, declared;
  int short_read; /* it shrank or failed mid-way: zeros pad the rest */
  char *out;      /* archive bytes not yet returned by read() */
  size_t out_len, out_cap;
  lua_Integer produced;
  unsigned char *block;
  locale_t loc;
  EVP_MD_CTX *md; /* with opts.hash: the SHA-256 of the file being streamed */
  int hash;
} tar_writer;

enum { WRITING, DONE, FAILED, CLOSED };

static la_ssize_t on_write(struct archive *a, void *ud, const void *buf, size_t n) {
  tar_writer *w = ud;
  if (w->state != WRITING) { /* closing early: stop libarchive padding the rest of a big file */
    archive_set_error(a, ECANCELED, "writer closed");
    return -1;
  }
  if (w->out_len + n > w->out_cap) {
    size_t cap = w->out_cap ? w->out_cap : CHUNK + BLOCK;
    while (cap < w->out_len + n) cap *= 2;
    char *p = realloc(w->out, cap);
    if (p == NULL) {
      archive_set_error(a, ENOMEM, "out of memory");
      return -1;
    }
    w->out = p;
    w->out_cap = cap;
  }
  memcpy(w->out + w->out_len, buf, n);
  w->out_len += n;
  return (la_ssize_t)n;
}

static void writer_release(tar_writer *w, int state) {
  if (w->state == WRITING) w->state = state;
  if (w->fd >= 0) close(w->fd);
  w->fd = -1;
  if (w->a) archive_write_free(w->a);
  w->a = NULL;
  if (w->entry) archive_entry_free(w->entry);
  w->entry = NULL;
  if (w->rootfd >= 0) close(w->rootfd);
  w->rootfd = -1;
  free(w->root);
  w->root = NULL;
  free(w->block);
  w->block = NULL;
  EVP_MD_CTX_free(w->md);
  w->md = NULL;
  if (state == CLOSED) { /* not from read(): the locale may be in use there */
    free(w->out);
    w->out = NULL;
    w->out_len = w->out_cap = 0;
    if (w->loc) freelocale(w->loc);
    w->loc = (locale_t)0;
  }
}

static tar_writer *check_writer(lua_State *L, const char *method) {
  tar_writer *w = luaL_testudata(L, 1, WRITER_MT);
  if (w == NULL)
    luaL_error(L, "tar_writer: %s: expected a writer (use writer:%s), got %s", method, method, luaL_typename(L, 1));
  return w;
}

/* Append a warning (formatted like lua_pushfstring) to the writer's list; the writer is at index 1. */
static void warn(lua_State *L, const char *fmt, ...) {
  va_list ap;
  lua_getiuservalue(L, 1, 2);
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  lua_pop(L, 1);
}

static const char *kind_word(mode_t m) {
  switch (m & S_IFMT) {
  case S_IFIFO: return "a fifo";
  case S_IFSOCK: return "a socket";
  case S_IFCHR: return "a character device";
  case S_IFBLK: return "a block device";
  default: return "of an unknown kind";
  }
}

/* Find name: stat it and, for a file, open it; for a symlink, read its target. 0 or an errno. */
static int inspect(tar_writer *w, const char *name, struct stat *st, int *fd, char *target, size_t *tlen) {
  int err = 0;
  *fd = -1;
  if (w->follow) {
    size_t rl = strlen(w->root), nl = strlen(name);
    char *path = malloc(rl + nl + 2);
    if (path == NULL) return ENOMEM;
    memcpy(path, w->root, rl);
    path[rl] = '/';
    memcpy(path + rl + 1, name, nl + 1);
    if (stat(path, st) < 0) {
      err = errno; /* a dangling symlink is archived as the link */
      if (err == ENOENT && lstat(path, st) == 0 && S_ISLNK(st->st_mode)) {
        ssize_t n = readlink(path, target, PATH_MAX);
        err = n < 0 ? errno : n == PATH_MAX ? ENAMETOOLONG : 0;
        *tlen = n > 0 ? (size_t)n : 0;
      }
    } else if (S_ISREG(st->st_mode) && (*fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)) < 0) {
      err = errno;
    }
    free(path);
    return err;
  }
  const char *leaf;
  size_t bad;
  int dirfd = ferry_fs_open_parent(w->rootfd, name, 0, &leaf, &bad);
  if (dirfd < 0) return -dirfd;
  if (fstatat(dirfd, leaf, st, AT_SYMLINK_NOFOLLOW) < 0) {
    err = errno;
  } else if (S_ISREG(st->st_mode)) {
    *fd = openat(dirfd, leaf, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | O_NOFOLLOW);
    if (*fd < 0) err = errno;
  } else if (S_ISLNK(st->st_mode)) {
    ssize_t n = readlinkat(dirfd, leaf, target, PATH_MAX);
    if (n < 0) err = errno;
    else if (n == PATH_MAX) err = ENAMETOOLONG;
    else *tlen = (size_t)n;
  }
  close(dirfd);
  return err;
}

static int write_failed(lua_State *L, tar_writer *w, const char *name) {
  lua_pushfstring(L, "tar_writer: %s: %s", name, archive_error_string(w->a));
  return 0;
}

static void hex(const unsigned char *md, char *out);

/* Record the finished digest of names[i] in the digests table (uservalue 3). 1, or 0 with a message pushed. */
static int record_digest(lua_State *L, tar_writer *w, lua_Integer i) {
  unsigned char md[DIGEST_LEN];
  char digest[2 * DIGEST_LEN + 1];
  lua_getiuservalue(L, 1, 1);
  lua_rawgeti(L, -1, i);
  if (!EVP_DigestFinal_ex(w->md, md, NULL)) {
    lua_pushfstring(L, "tar_writer: %s: sha256 failed", lua_tostring(L, -1));
    return 0;
  }
  hex(md, digest);
  lua_getiuservalue(L, 1, 3);
  lua_pushvalue(L, -2);
  lua_pushstring(L, digest);
  lua_rawset(L, -3);
  lua_pop(L, 3);
  return 1;
}

/* Archive the header of names[i]; a file's data follows in stream_file. 1, or 0 with a message pushed. */
static int add_entry(lua_State *L, tar_writer *w, lua_Integer i) {
  lua_getiuservalue(L, 1, 1);
  lua_rawgeti(L, -1, i);
  const char *name = lua_tostring(L, -1);
  struct stat st;
  int fd;
  char target[PATH_MAX + 1];
  size_t tlen = 0;
  int err = inspect(w, name, &st, &fd, target, &tlen);
  if (err == 0 && fd >= 0 && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))) err = ENOENT; /* swapped under us */
  if (err) {
    if (fd >= 0) close(fd);
    warn(L, "%s: %s", name,
         err == ENOENT  ? "vanished before it was archived"
         : err == ELOOP ? "not archived: a parent directory is a symbolic link"
                        : strerror(err));
    lua_pop(L, 2);
    return 1;
  }
  if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode) && !S_ISLNK(st.st_mode)) {
    warn(L, "%s: skipped, %s", name, kind_word(st.st_mode));
    lua_pop(L, 2);
    return 1;
  }
  struct archive_entry *e = w->entry;
  archive_entry_clear(e);
  archive_entry_copy_pathname(e, name);
  archive_entry_set_filetype(e, st.st_mode & S_IFMT);
  archive_entry_set_perm(e, st.st_mode & 07777);
  archive_entry_set_mtime(e, st.st_mtim.tv_sec, 0); /* whole seconds: sub-second times cost a pax header */
  archive_entry_set_size(e, S_ISREG(st.st_mode) ? st.st_size : 0);
  if (S_ISLNK(st.st_mode)) {
    target[tlen] = '\0';
    archive_entry_copy_symlink(e, target);
  }
  int r = archive_write_header(w->a, e);
  if (r < ARCHIVE_WARN) {
    if (fd >= 0) close(fd);
    return write_failed(L, w, name);
  }
  /* A name that is not UTF-8 goes out as raw bytes (hdrcharset=BINARY): nothing is lost, nothing to report. */
  if (r == ARCHIVE_WARN && strncmp(archive_error_string(w->a), "Can't translate", 15) != 0)
    warn(L, "%s: %s", name, archive_error_string(w->a));
  lua_pop(L, 2);
  if (fd >= 0 && w->hash && !EVP_DigestInit_ex(w->md, EVP_sha256(), NULL)) {
    close(fd);
    lua_getiuservalue(L, 1, 1);
    lua_rawgeti(L, -1, i);
    lua_pushfstring(L, "tar_writer: %s: sha256 failed", lua_tostring(L, -1));
    return 0;
  }
  if (fd >= 0 && st.st_size > 0) {
    w->fd = fd;
    w->cur = i;
    w->remaining = w->declared = st.st_size;
    w->short_read = 0;
  } else if (fd >= 0) {
    close(fd);
    if (w->hash) return record_digest(L, w, i);
  }
  return 1;
}

/* Archive the next block of the current file. 1, or 0 with a message pushed. */
static int stream_file(lua_State *L, tar_writer *w) {
  size_t want = w->remaining < BLOCK ? (size_t)w->remaining : BLOCK;
  ssize_t n = 0;
  if (!w->short_read) {
    do n = read(w->fd, w->block, want);
    while (n < 0 && errno == EINTR);
    if (n <= 0) {
      int err = n < 0 ? errno : 0;
      lua_getiuservalue(L, 1, 1);
      lua_rawgeti(L, -1, w->cur);
      warn(L, "%s: %s, the rest archived as zeros", lua_tostring(L, -1),
           err ? strerror(err) : "shrank while being archived");
      lua_pop(L, 2);
      w->short_read = 1;
      memset(w->block, 0, BLOCK);
    }
  }
  if (w->short_read) n = (ssize_t)want;
  if (w->hash && !EVP_DigestUpdate(w->md, w->block, (size_t)n)) {
    lua_getiuservalue(L, 1, 1);
    lua_rawgeti(L, -1, w->cur);
    lua_pushfstring(L, "tar_writer: %s: sha256 failed", lua_tostring(L, -1));
    return 0;
  }
  if (archive_write_data(w->a, w->block, (size_t)n) < 0) {
    lua_getiuservalue(L, 1, 1);
    lua_rawgeti(L, -1, w->cur);
    return write_failed(L, w, lua_tostring(L, -1));
  }
  w->remaining -= n;
  if (w->remaining == 0) {
    struct stat st;
    if (!w->short_read && fstat(w->fd, &st) == 0 && st.st_size != w->declared) {
      lua_getiuservalue(L, 1, 1);
      lua_rawgeti(L, -1, w->cur);
      warn(L, "%s: grew while being archived, the first %I bytes archived", lua_tostring(L, -1),
           (lua_Integer)w->declared);
      lua_pop(L, 2);
    }
    close(w->fd);
    w->fd = -1;
    if (w->hash) return record_digest(L, w, w->cur);
  }
  return 1;
}

static int step(lua_State *L, tar_writer *w) {
  if (w->fd >= 0) return stream_file(L, w);
  if (w->next <= w->count) return add_entry(L, w, w->next++);
  if (archive_write_close(w->a) != ARCHIVE_OK) return write_failed(L, w, "end of archive");
  writer_release(w, DONE);
  return 1;
}

static int l_read(lua_State *L) {
  tar_writer *w = check_writer(L, "read");
  lua_settop(L, 1);
  if (w->state == CLOSED) return luaL_error(L, "tar_writer: read after close");
  if (w->state == FAILED) return luaL_error(L, "tar_writer: read after a failure");
  locale_t loc = w->loc, old = loc ? uselocale(loc) : (locale_t)0;
  int ok = 1;
  while (ok && w->state == WRITING && w->out_len < CHUNK) ok = step(L, w);
  if (loc) uselocale(old);
  if (!ok) {
    writer_release(w, FAILED);
    return lua_error(L);
  }
  if (w->out_len == 0) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushlstring(L, w->out, w->out_len);
  w->produced += (lua_Integer)w->out_len;
  w->out_len = 0;
  if (w->state == DONE) { /* nothing more will come: give the buffer back */
    free(w->out);
    w->out = NULL;
    w->out_cap = 0;
  }
  return 1;
}

static int l_bytes(lua_State *L) {
  lua_pushinteger(L, check_writer(L, "bytes")->produced);
  return 1;
}

static int l_warnings(lua_State *L) {
  check_writer(L, "warnings");
  lua_getiuservalue(L, 1, 2);
  lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
  lua_createtable(L, (int)n, 0);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, -2, i);
    lua_rawseti(L, -2, i);
  }
  return 1;
}

static int l_digests(lua_State *L) {
  tar_writer *w = check_writer(L, "digests");
  if (!w->hash) return luaL_error(L, "tar_writer: digests: the writer was made without opts.hash");
  lua_getiuservalue(L, 1, 3);
  lua_newtable(L);
  lua_pushnil(L);
  while (lua_next(L, -3)) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, -4);
  }
  return 1;
}

static int l_writer_close(lua_State *L) {
  writer_release(check_writer(L, "close"), CLOSED);
  return 0;
}

static int l_writer_gc(lua_State *L) {
  writer_release(luaL_checkudata(L, 1, WRITER_MT), CLOSED);
  return 0;
}

static int l_writer_tostring(lua_State *L) {
  tar_writer *w = luaL_checkudata(L, 1, WRITER_MT);
  static const char *const states[] = {"writing", "done", "failed", "closed"};
  lua_pushfstring(L, "tar writer (%s, %I bytes)", states[w->state], w->produced);
  return 1;
}

/* Copy names (index 2) into a new table, checking each; misuse raises. */
static lua_Integer copy_names(lua_State *L) {
  if (!lua_istable(L, 2)) luaL_error(L, "tar_writer: names must be a table, got %s", luaL_typename(L, 2));
  lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
  lua_createtable(L, (int)n, 0);
  for (lua_Integer i = 1; i <= n; i++) {
    size_t len;
    if (lua_rawgeti(L, 2, i) != LUA_TSTRING)
      luaL_error(L, "tar_writer: names[%I] must be a string, got %s", i, luaL_typename(L, -1));
    const char *s = lua_tolstring(L, -1, &len);
    if (!ferry_fs_rel_ok(s, len))
      luaL_error(L, "tar_writer: names[%I] must be a relative path without empty, '.' or '..' components, got '%s'",
                 i, s);
    lua_rawseti(L, -2, i);
  }
  return n;
}

static int l_tar_writer(lua_State *L) {
  size_t rootlen;
  const char *root = check_string(L, 1, "tar_writer", "root", &rootlen);
  if (!lua_isnoneornil(L, 3) && !lua_istable(L, 3))
    return luaL_error(L, "tar_writer: opts must be a table, got %s", luaL_typename(L, 3));
  int follow = 0, hash = 0;
  if (lua_istable(L, 3)) {
    lua_getfield(L, 3, "follow_symlinks");
    follow = lua_toboolean(L, -1);
    lua_getfield(L, 3, "hash");
    hash = lua_toboolean(L, -1);
    lua_pop(L, 2);
  }
  lua_settop(L, 2);
  lua_Integer n = copy_names(L); /* 3 */
  tar_writer *w = lua_newuserdatauv(L, sizeof *w, 3); /* 4 */
  memset(w, 0, sizeof *w);
  w->rootfd = w->fd = -1;
  w->state = WRITING;
  w->follow = follow;
  w->hash = hash;
  w->next = 1;
  w->count = n;
  luaL_setmetatable(L, WRITER_MT);
  lua_pushvalue(L, 3);
  lua_setiuservalue(L, 4, 1);
  lua_newtable(L);
  lua_setiuservalue(L, 4, 2);
  lua_newtable(L);
  lua_setiuservalue(L, 4, 3);
  w->rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (w->rootfd < 0) return sys_fail(L, errno, "tar_writer %s%s: %s", root, "");
  w->root = malloc(rootlen + 1);
  w->block = malloc(BLOCK);
  w->entry = archive_entry_new();
  w->a = archive_write_new();
  w->loc = utf8_locale();
  if (hash) w->md = EVP_MD_CTX_new();
  if (!w->root || !w->block || !w->entry || !w->a || (hash && !w->md))
    return luaL_error(L, "tar_writer: out of memory");
  memcpy(w->root, root, rootlen + 1);
  if (archive_write_set_format_pax_restricted(w->a) != ARCHIVE_OK ||
      archive_write_set_bytes_in_last_block(w->a, 1) != ARCHIVE_OK ||
      archive_write_open2(w->a, w, NULL, on_write, NULL, NULL) != ARCHIVE_OK)
    return luaL_error(L, "tar_writer: %s", archive_error_string(w->a));
  return 1;
}

/* ================================ reading ================================ */

typedef struct tar_reader {
  struct archive *a;
  EVP_MD_CTX *md;
  unsigned char *block;
  int rootfd;
  ferry_fs_tmp tmp;
  locale_t loc, old;
} tar_reader;

/* __close and __gc: runs however the call ends, so nothing leaks and the locale comes back. */
static int reader_release(lua_State *L) {
  tar_reader *r = luaL_checkudata(L, 1, READER_MT);
  ferry_fs_tmp_abort(&r->tmp);
  if (r->rootfd >= 0) close(r->rootfd);
  r->rootfd = -1;
  if (r->a) archive_read_free(r->a);
  r->a = NULL;
  EVP_MD_CTX_free(r->md);
  r->md = NULL;
  free(r->block);
  r->block = NULL;
  if (r->loc) {
    uselocale(r->old);
    freelocale(r->loc);
  }
  r->loc = (locale_t)0;
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
  r->a = archive_read_new();
  r->md = EVP_MD_CTX_new();
  r->block = malloc(BLOCK);
  if (!r->a || !r->md || !r->block) luaL_error(L, "%s: out of memory", fn);
  r->loc = utf8_locale();
  if (r->loc) r->old = uselocale(r->loc);
  archive_read_support_format_tar(r->a);
  archive_read_support_format_empty(r->a);
  struct stat st;
  if (stat(path, &st) < 0) {
    sys_fail(L, errno, "%s %s: %s", fn, path);
    return NULL;
  }
  if (archive_read_open_filename(r->a, path, BLOCK) != ARCHIVE_OK) {
    int err = archive_errno(r->a);
    if (err > 0 && err != EILSEQ) { /* libarchive reports a format problem as EILSEQ */
      sys_fail(L, err, "%s %s: %s", fn, path);
    } else {
      ferry_fail(L, "EINVAL", "bad archive: %s", archive_error_string(r->a));
    }
    return NULL;
  }
  return r;
}

static const char *entry_kind(struct archive_entry *e) {
  if (archive_entry_hardlink(e) != NULL) return "hardlink";
  switch (archive_entry_filetype(e)) {
  case AE_IFREG: return "file";
  case AE_IFDIR: return "dir";
  case AE_IFLNK: return "symlink";
  case AE_IFCHR: return "char";
  case AE_IFBLK: return "block";
  case AE_IFIFO: return "fifo";
  case AE_IFSOCK: return "socket";
  default: return "other";
  }
}

static void hex(const unsigned char *md, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (int i = 0; i < DIGEST_LEN; i++) {
    out[2 * i] = digits[md[i] >> 4];
    out[2 * i + 1] = digits[md[i] & 0xf];
  }
  out[2 * DIGEST_LEN] = '\0';
}

static int bad_archive(lua_State *L, tar_reader *r) {
  return ferry_fail(L, "EINVAL", "bad archive: %s", archive_error_string(r->a));
}

static int too_big(lua_State *L, lua_Integer max, const char *name) {
  return ferry_fail(L, "EFBIG", "archive exceeds the %I byte limit at %s", max, name);
}

/* Next header: 1 with *e set, 0 at the end, -1 on a bad archive. */
static int next_entry(tar_reader *r, struct archive_entry **e) {
  int rc = archive_read_next_header(r->a, e);
  if (rc == ARCHIVE_EOF) return 0;
  if (rc < ARCHIVE_WARN) return -1; /* ARCHIVE_WARN: a name not valid in the locale, kept as its bytes */
  if (archive_entry_pathname(*e) == NULL) {
    archive_set_error(r->a, EILSEQ, "an entry without a name");
    return -1;
  }
  return 1;
}

/* Read the current entry's data, hashing it into r->md and copying it to r->tmp when open.
 * 0, -1 on a bad archive, -2 over the limit, or an errno (> 0) from writing. */
static int pump_data(tar_reader *r, int64_t *total, lua_Integer max, unsigned char *md) {
  if (!EVP_DigestInit_ex(r->md, EVP_sha256(), NULL)) return ENOMEM;
  for (;;) {
    la_ssize_t n = archive_read_data(r->a, r->block, BLOCK);
    if (n < 0) return -1;
    if (n == 0) break;
    *total += n;
    if (*total > max) return -2;
    if (!EVP_DigestUpdate(r->md, r->block, (size_t)n)) return ENOMEM;
    if (r->tmp.fd >= 0) {
      int err = ferry_fs_tmp_write(&r->tmp, r->block, (size_t)n);
      if (err < 0) return -err;
    }
  }
  return EVP_DigestFinal_ex(r->md, md, NULL) ? 0 : ENOMEM;
}

static int l_tar_scan(lua_State *L) {
  size_t len;
  const char *path = check_string(L, 1, "tar_scan", "path", &len);
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
  while ((rc = next_entry(r, &e)) > 0) {
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
      unsigned char md[DIGEST_LEN];
      char digest[2 * DIGEST_LEN + 1];
      int err = pump_data(r, &total, max, md);
      if (err == -1) return bad_archive(L, r);
      if (err == -2) return too_big(L, max, name);
      if (err) return luaL_error(L, "tar_scan: sha256 failed");
      hex(md, digest);
      lua_pushstring(L, digest);
      lua_setfield(L, -2, "sha256");
    }
    lua_rawseti(L, 4, ++n);
  }
  if (rc < 0) return bad_archive(L, r);
  return 1;
}

/* ================================ extract ================================ */

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
    t = lua_getfield(L, -1, "sha256");
    if (t != LUA_TNIL && (t != LUA_TSTRING || lua_rawlen(L, -1) != 2 * DIGEST_LEN))
      luaL_error(L, "tar_extract: plan['%s'].sha256 must be 64 hex digits", name);
    lua_pop(L, 2);
  }
}

typedef struct extract_ctx {
  tar_reader *r;
  const char *root;
  lua_Integer max;
  int64_t total;
} extract_ctx;

/* Push "tar_extract <name> ->" for ferry_fs_fail messages. */
static const char *op_name(lua_State *L, const char *name) {
  return lua_pushfstring(L, "tar_extract %s ->", name);
}

static int extract_file(lua_State *L, extract_ctx *x, struct archive_entry *e, const char *name, const char *dest,
                        int mode, const char *want_sha) {
  tar_reader *r = x->r;
  const char *leaf;
  size_t bad;
  int dirfd = ferry_fs_open_parent(r->rootfd, dest, 1, &leaf, &bad);
  if (dirfd < 0) return ferry_fs_fail(L, -dirfd, op_name(L, name), x->root, dest, bad);
  int err = ferry_fs_tmp_create(&r->tmp, dirfd);
  if (err < 0) return ferry_fs_fail(L, -err, op_name(L, name), x->root, dest, FERRY_FS_NO_COMPONENT);
  unsigned char md[DIGEST_LEN];
  if (archive_entry_size(e) > x->max - x->total) return too_big(L, x->max, name);
  err = pump_data(r, &x->total, x->max, md);
  if (err == -1) return bad_archive(L, r);
  if (err == -2) return too_big(L, x->max, name);
  if (err) return ferry_fs_fail(L, err, op_name(L, name), x->root, dest, FERRY_FS_NO_COMPONENT);
  char digest[2 * DIGEST_LEN + 1];
  hex(md, digest);
  if (want_sha && strcmp(digest, want_sha) != 0)
    return ferry_fail(L, "EINVAL", "tar_extract %s: content differs from the scanned archive", name);
  struct timespec times[2] = {{0, UTIME_OMIT}, {archive_entry_mtime(e), archive_entry_mtime_nsec(e)}};
  futimens(r->tmp.fd, times);
  err = ferry_fs_tmp_commit(&r->tmp, leaf, (unsigned)mode);
  if (err < 0) return ferry_fs_fail(L, -err, op_name(L, name), x->root, dest, FERRY_FS_NO_COMPONENT);
  return 0;
}

/* Write the current entry as planned (plan entry at the top of the stack). 0 or the count of pushed values. */
static int extract_entry(lua_State *L, extract_ctx *x, struct archive_entry *e, const char *name, int dirs) {
  lua_getfield(L, -1, "dest");
  const char *dest = lua_tostring(L, -1); /* anchored by the plan */
  lua_pop(L, 1);
  int mode = lua_getfield(L, -1, "mode") == LUA_TNIL ? (int)(archive_entry_perm(e) & 0777)
                                                      : (int)(lua_tointeger(L, -1) & 0777);
  lua_pop(L, 1);
  lua_getfield(L, -1, "sha256");
  const char *want_sha = lua_tostring(L, -1);
  lua_pop(L, 1);
  const char *kind = entry_kind(e);
  if (strcmp(kind, "file") == 0) return extract_file(L, x, e, name, dest, mode, want_sha);
  size_t bad = FERRY_FS_NO_COMPONENT;
  int err;
  if (strcmp(kind, "dir") == 0) {
    err = ferry_fs_mkdir(x->r->rootfd, dest, mode | 0700, &bad); /* owner-writable until the end */
    if (err == 0) {
      lua_createtable(L, 2, 0);
      lua_pushstring(L, dest);
      lua_rawseti(L, -2, 1);
      lua_pushinteger(L, mode);
      lua_rawseti(L, -2, 2);
      lua_rawseti(L, dirs, (lua_Integer)lua_rawlen(L, dirs) + 1);
    }
  } else if (strcmp(kind, "symlink") == 0) {
    const char *leaf;
    int dirfd = ferry_fs_open_parent(x->r->rootfd, dest, 1, &leaf, &bad);
    if (dirfd < 0) {
      err = dirfd;
    } else {
      err = ferry_fs_symlink_in(dirfd, leaf, archive_entry_symlink(e));
      close(dirfd);
    }
  } else {
    return ferry_fail(L, "EINVAL", "tar_extract %s: a %s entry cannot be extracted", name, kind);
  }
  if (err < 0) return ferry_fs_fail(L, -err, op_name(L, name), x->root, dest, bad);
  return 0;
}

static int l_tar_extract(lua_State *L) {
  size_t len;
  const char *path = check_string(L, 1, "tar_extract", "path", &len);
  const char *root = check_string(L, 2, "tar_extract", "root", &len);
  check_plan(L);
  if (!lua_isnoneornil(L, 4) && !lua_istable(L, 4))
    return luaL_error(L, "tar_extract: opts must be a table, got %s", luaL_typename(L, 4));
  extract_ctx x = {NULL, root, opt_limit(L, 4, "tar_extract", "max_bytes", DEFAULT_MAX_BYTES), 0};
  lua_settop(L, 4);
  x.r = open_reader(L, "tar_extract", path); /* 5 */
  if (x.r == NULL) return 3;
  x.r->rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (x.r->rootfd < 0) return sys_fail(L, errno, "tar_extract %s%s: %s", root, "");
  lua_newtable(L); /* 6: names written */
  lua_newtable(L); /* 7: dirs made, {dest, mode}, for their modes at the end */
  lua_Integer count = 0;
  struct archive_entry *e;
  int rc;
  while ((rc = next_entry(x.r, &e)) > 0) {
    const char *name = archive_entry_pathname(e);
    lua_pushstring(L, name);
    if (lua_rawget(L, 3) == LUA_TNIL) {
      lua_pop(L, 1);
      continue;
    }
    int pushed = extract_entry(L, &x, e, name, 7);
    if (pushed) return pushed;
    lua_pop(L, 1);
    lua_pushstring(L, name);
    lua_pushboolean(L, 1);
    lua_rawset(L, 6);
    count++;
  }
  if (rc < 0) return bad_archive(L, x.r);
  lua_pushnil(L);
  while (lua_next(L, 3)) {
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, 6) == LUA_TNIL)
      return ferry_fail(L, "ENOENT", "tar_extract %s: planned entry %s is not in the archive", path,
                        lua_tostring(L, -2));
    lua_pop(L, 1);
  }
  for (lua_Integer i = (lua_Integer)lua_rawlen(L, 7); i > 0; i--) { /* deepest first */
    lua_rawgeti(L, 7, i);
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
  return 1;
}

void ferry_open_archive(lua_State *L) {
  static const luaL_Reg writer_methods[] = {
      {"read", l_read},         {"bytes", l_bytes}, {"warnings", l_warnings},
      {"digests", l_digests}, {"close", l_writer_close}, {NULL, NULL}};
  static const luaL_Reg writer_meta[] = {
      {"__gc", l_writer_gc}, {"__close", l_writer_gc}, {"__tostring", l_writer_tostring}, {NULL, NULL}};
  static const luaL_Reg fns[] = {
      {"tar_writer", l_tar_writer}, {"tar_scan", l_tar_scan}, {"tar_extract", l_tar_extract}, {NULL, NULL}};
  if (luaL_newmetatable(L, WRITER_MT)) {
    luaL_setfuncs(L, writer_meta, 0);
    luaL_newlib(L, writer_methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, READER_MT)) {
    lua_pushcfunction(L, reader_release);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, reader_release);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, fns, 0);
}
