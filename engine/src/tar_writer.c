/* Writing a tar stream through libarchive: a workspace as a pax archive, returned in chunks.
 *
 * core.tar_writer(root, names[, {follow_symlinks=false, hash=false, flagged=mask}]) -> writer
 *   | nil, "tar_writer <root>: <reason>", code
 *   names: relative paths in emit order (dirs before their contents), archived exactly as given (no "./"):
 *   files (streamed 64 KiB at a time), dirs, symlinks; other kinds are skipped with a warning. pax-restricted,
 *   uid/gid 0, no user/group names, xattrs or ACLs. follow_symlinks archives what a symlink points to.
 *   names may be a tree (core.tree_new, tree_walk): its entries in path order, or with opts.flagged only those
 *   whose flags share a bit with the mask; with opts.hash each file's sha256 slot then receives the digest of
 *   what was archived (and its size the size archived), and is emptied for a file left out (it vanished or is
 *   no file now). Adding to the tree
 *   out of order while it streams raises "tar_writer: the tree changed order while it was streamed".
 *   writer:read() -> next chunk (up to ~200 KiB) | nil at the end; raises on a libarchive failure
 *   writer:bytes() -> bytes returned by read() so far; writer:warnings() -> list of strings
 *   writer:digests() (with hash) -> {name = sha256 hex} of each file archived in full so far: the SHA-256 of
 *   the content bytes the archive carries (zeros included where a file shrank mid-way), computed as they are
 *   read, so nothing reads a file twice; raises "tar_writer: digests: the writer was made without opts.hash"
 *   and, for a tree, "tar_writer: digests: the writer streams a tree; its digests are in the tree".
 *   writer:close() (also on gc): stops early and releases the open file.
 *
 * libarchive converts names between the locale's charset and the UTF-8 of pax records, so a UTF-8 locale is
 * pinned while it works: names are bytes end to end (invalid UTF-8 goes out with hdrcharset=BINARY).
 * tar_reader.c reads such archives back.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
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
#define BLOCK (64 * 1024)
#define CHUNK (128 * 1024)

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
  ferry_tree *tree;   /* names come from this tree (uservalue 1) instead of a list */
  unsigned long gen;  /* the tree's generation when streaming began */
  unsigned flagged;   /* with a tree: only entries with one of these flags (0: all) */
  char *name;         /* the current tree entry's path, NUL-terminated */
  int dirfd;          /* the last parent directory opened, kept for its next entries */
  char *dir;          /* its relative path */
  size_t dir_len, dir_cap;
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
  if (w->dirfd >= 0) close(w->dirfd);
  w->dirfd = -1;
  free(w->dir);
  w->dir = NULL;
  w->dir_len = w->dir_cap = 0;
  free(w->name);
  w->name = NULL;
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

/* The name of entry i (1-based): the list's string (anchored there), or the tree entry's path copied into
 * w->name (valid until the next call). */
static const char *name_at(lua_State *L, tar_writer *w, lua_Integer i) {
  if (w->tree == NULL) {
    lua_getiuservalue(L, 1, 1);
    lua_rawgeti(L, -1, i);
    const char *name = lua_tostring(L, -1);
    lua_pop(L, 2);
    return name;
  }
  size_t len;
  unsigned flags;
  int live;
  const char *path = ferry_tree_entry_at(w->tree, (size_t)i - 1, &len, &flags, &live);
  memcpy(w->name, path, len); /* room for the longest path a tree holds */
  w->name[len] = '\0';
  return w->name;
}

/* Whether there is an entry to archive from w->next on (a tree's removed or unflagged entries are passed
 * over): 1, 0 at the end, or -1 with a message pushed. Never raises: read() has a locale to restore. */
static int next_wanted(lua_State *L, tar_writer *w) {
  if (w->tree == NULL) return w->next <= w->count;
  if (ferry_tree_gen(w->tree) != w->gen) {
    lua_pushliteral(L, "tar_writer: the tree changed order while it was streamed");
    return -1;
  }
  for (; w->next <= w->count; w->next++) {
    size_t len;
    unsigned flags;
    int live;
    ferry_tree_entry_at(w->tree, (size_t)w->next - 1, &len, &flags, &live);
    if (live && (w->flagged == 0 || (flags & w->flagged))) return 1;
  }
  return 0;
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

/* The directory holding name, opened without following a symlink (fd or -errno; *leaf: the last component).
 * Kept open for the entries after it: in emit order most share their parent, or sit below the last one. */
static int parent_of(tar_writer *w, const char *name, const char **leaf) {
  const char *slash = strrchr(name, '/');
  size_t len = slash ? (size_t)(slash - name) : 0, bad;
  *leaf = slash ? slash + 1 : name;
  if (strlen(*leaf) > NAME_MAX) return -ENAMETOOLONG;
  if (w->dirfd >= 0 && w->dir_len == len && memcmp(w->dir, name, len) == 0) return w->dirfd;
  int below = w->dirfd >= 0 && len > w->dir_len && name[w->dir_len] == '/' && memcmp(w->dir, name, w->dir_len) == 0;
  size_t from = below ? w->dir_len + 1 : 0;
  int fd = ferry_fs_walk(below ? w->dirfd : w->rootfd, name + from, len - from, 0, &bad);
  if (fd < 0) return fd;
  if (len + 1 > w->dir_cap) {
    char *p = realloc(w->dir, len + 1);
    if (p == NULL) {
      close(fd);
      return -ENOMEM;
    }
    w->dir = p;
    w->dir_cap = len + 1;
  }
  if (w->dirfd >= 0) close(w->dirfd);
  w->dirfd = fd;
  memcpy(w->dir, name, len);
  w->dir_len = len;
  return fd;
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
  int dirfd = parent_of(w, name, &leaf);
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
  return err;
}

static int write_failed(lua_State *L, tar_writer *w, const char *name) {
  lua_pushfstring(L, "tar_writer: %s: %s", name, archive_error_string(w->a));
  return 0;
}

/* Record the finished digest of entry i in the digests table (uservalue 3), or in the tree's slot. 1, or 0
 * with a message pushed. */
static int record_digest(lua_State *L, tar_writer *w, lua_Integer i) {
  unsigned char md[FERRY_SHA256_LEN];
  char digest[2 * FERRY_SHA256_LEN + 1];
  if (!EVP_DigestFinal_ex(w->md, md, NULL)) {
    lua_pushfstring(L, "tar_writer: %s: sha256 failed", name_at(L, w, i));
    return 0;
  }
  if (w->tree) {
    ferry_tree_record_sha(w->tree, (size_t)i - 1, md, (uint64_t)w->declared);
    return 1;
  }
  ferry_hex(md, FERRY_SHA256_LEN, digest);
  lua_getiuservalue(L, 1, 3);
  lua_pushstring(L, name_at(L, w, i));
  lua_pushstring(L, digest);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  return 1;
}

/* Archive the header of names[i]; a file's data follows in stream_file. 1, or 0 with a message pushed. */
static int add_entry(lua_State *L, tar_writer *w, lua_Integer i) {
  const char *name = name_at(L, w, i);
  if (w->tree && w->hash) ferry_tree_record_sha(w->tree, (size_t)i - 1, NULL, 0); /* until it is archived whole */
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
    return 1;
  }
  if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode) && !S_ISLNK(st.st_mode)) {
    warn(L, "%s: skipped, %s", name, kind_word(st.st_mode));
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
  if (fd >= 0 && w->hash && !EVP_DigestInit_ex(w->md, EVP_sha256(), NULL)) {
    close(fd);
    lua_pushfstring(L, "tar_writer: %s: sha256 failed", name);
    return 0;
  }
  if (fd >= 0 && st.st_size > 0) {
    w->fd = fd;
    w->cur = i;
    w->remaining = w->declared = st.st_size;
    w->short_read = 0;
  } else if (fd >= 0) {
    close(fd);
    w->declared = 0;
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
      warn(L, "%s: %s, the rest archived as zeros", name_at(L, w, w->cur),
           err ? strerror(err) : "shrank while being archived");
      w->short_read = 1;
      memset(w->block, 0, BLOCK);
    }
  }
  if (w->short_read) n = (ssize_t)want;
  if (w->hash && !EVP_DigestUpdate(w->md, w->block, (size_t)n)) {
    lua_pushfstring(L, "tar_writer: %s: sha256 failed", name_at(L, w, w->cur));
    return 0;
  }
  if (archive_write_data(w->a, w->block, (size_t)n) < 0) return write_failed(L, w, name_at(L, w, w->cur));
  w->remaining -= n;
  if (w->remaining == 0) {
    struct stat st;
    if (!w->short_read && fstat(w->fd, &st) == 0 && st.st_size != w->declared)
      warn(L, "%s: grew while being archived, the first %I bytes archived", name_at(L, w, w->cur),
           (lua_Integer)w->declared);
    close(w->fd);
    w->fd = -1;
    if (w->hash) return record_digest(L, w, w->cur);
  }
  return 1;
}

static int step(lua_State *L, tar_writer *w) {
  if (w->fd >= 0) return stream_file(L, w);
  int wanted = next_wanted(L, w);
  if (wanted < 0) return 0;
  if (wanted) return add_entry(L, w, w->next++);
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
  if (w->tree) return luaL_error(L, "tar_writer: digests: the writer streams a tree; its digests are in the tree");
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
  if (!lua_istable(L, 2)) luaL_error(L, "tar_writer: names must be a table or a tree, got %s", luaL_typename(L, 2));
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
  const char *root = ferry_check_path(L, 1, "tar_writer", "root", &rootlen);
  if (!lua_isnoneornil(L, 3) && !lua_istable(L, 3))
    return luaL_error(L, "tar_writer: opts must be a table, got %s", luaL_typename(L, 3));
  int follow = 0, hash = 0;
  lua_Integer flagged = 0;
  if (lua_istable(L, 3)) {
    lua_getfield(L, 3, "follow_symlinks");
    follow = lua_toboolean(L, -1);
    lua_getfield(L, 3, "hash");
    hash = lua_toboolean(L, -1);
    lua_getfield(L, 3, "flagged");
    int ok = 1;
    if (!lua_isnil(L, -1)) flagged = lua_tointegerx(L, -1, &ok);
    if (!ok || flagged < 0 || flagged > 255) luaL_error(L, "tar_writer: opts.flagged must be an integer in 0..255");
    lua_pop(L, 3);
  }
  lua_settop(L, 2);
  ferry_tree *tree = ferry_tree_test(L, 2);
  if (tree == NULL && flagged) luaL_error(L, "tar_writer: opts.flagged needs a tree of names");
  lua_Integer n = tree ? (lua_Integer)ferry_tree_len(tree) : copy_names(L);
  if (tree) lua_pushvalue(L, 2); /* 3 */
  tar_writer *w = lua_newuserdatauv(L, sizeof *w, 3); /* 4 */
  memset(w, 0, sizeof *w);
  w->rootfd = w->fd = w->dirfd = -1;
  w->tree = tree;
  w->gen = tree ? ferry_tree_gen(tree) : 0;
  w->flagged = (unsigned)flagged;
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
  if (w->rootfd < 0) return ferry_sys_fail(L, errno, "tar_writer", root);
  if (tree && (w->name = malloc(FERRY_TREE_MAX_PATH + 1)) == NULL) return luaL_error(L, "tar_writer: out of memory");
  w->root = malloc(rootlen + 1);
  w->block = malloc(BLOCK);
  w->entry = archive_entry_new();
  w->a = archive_write_new();
  w->loc = ferry_utf8_locale();
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

void ferry_open_tar_writer(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"read", l_read},         {"bytes", l_bytes}, {"warnings", l_warnings},
      {"digests", l_digests}, {"close", l_writer_close}, {NULL, NULL}};
  static const luaL_Reg meta[] = {
      {"__gc", l_writer_gc}, {"__close", l_writer_gc}, {"__tostring", l_writer_tostring}, {NULL, NULL}};
  ferry_new_class(L, WRITER_MT, meta, methods);
  lua_pushcfunction(L, l_tar_writer);
  lua_setfield(L, -2, "tar_writer");
}
