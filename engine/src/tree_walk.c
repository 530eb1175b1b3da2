/* The walk of a local directory into a tree: readdir and lstat in C, each directory read sorted by name so
 * the tree comes out in path order, hashing (SHA-256, 64 KiB blocks) only what an earlier tree cannot vouch
 * for.
 *
 * core.tree_walk(root, opts) -> tree, info | nil, message, code
 *   root: a directory (a symlink to one is followed; nothing below it is, unless follow_symlinks)
 *   opts.exclude = fn(rel, is_dir) -> true to leave rel out (a directory left out is not entered), or an exclude
 *     matcher (core.exclude_matcher), asked in C
 *   opts.hash = true: every file gets its sha256 (read, unless opts.known vouches for it)
 *   opts.known = an earlier tree: a file whose mode, size, inode and mtime (exact) match its entry there takes
 *     the recorded sha256 unread, unless that mtime was within 2 s of the start of the walk that recorded it
 *     (known:taken_at()) or later: a write in the same clock tick can leave the mtime as it was
 *   opts.follow_symlinks = true: a symlink is described (and entered) as what it points to; a dangling one
 *     stays a symlink
 *   info: {files, dirs, symlinks, bytes (of files), hashed (files read), skipped = {rel...} (fifos, sockets,
 *     devices: what a tar stream cannot carry), temps = {rel...} (files and symlinks named
 *     ".ferry-tmp-<run token>-<hex>" whose token is in opts.temp_tokens — a set, or true for any run: what a
 *     killed write of a ferry run left behind; neither in the tree nor offered to exclude)}
 *   The tree's taken_at is the walk's start. Entries that vanish while the walk runs are left out.
 *   Errors: "stat <root>: <reason>"; "tree_walk <root>: not a directory" (ENOTDIR); "readdir|lstat|readlink|
 *   sha256 <root>/<rel>: <reason>"; "<root>/<rel>: symlink loop" (ELOOP, with follow_symlinks);
 *   "tree_walk <root>/<rel>: <limit>" (ENAMETOOLONG for a path over 65535 bytes, E2BIG for other limits).
 */
#include <dirent.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "tree.h"

#define WALKER_MT "ferry.tree_walker"
#define BLOCK (64 * 1024)
#define RACY_SECONDS 2
#define FD_DEPTH 64 /* directories held open at once; deeper ones are reopened from an ancestor */

typedef struct level {
  int fd;             /* -1 while closed (deeper than FD_DEPTH) */
  char *names;        /* the directory's names, NUL-terminated, sorted through `order` */
  size_t *order;      /* offsets into names */
  size_t count, next;
  size_t rel_len;     /* length of the directory's rel path */
  uint64_t dev, ino;
} level;

typedef struct walker {
  lua_State *L;
  ferry_tree *t;
  const ferry_tree *known;
  size_t kpos;
  int hash, follow, exclude; /* exclude: stack index of the function, or 0 */
  ferry_exclude *matcher;    /* or a matcher (core.exclude_matcher), asked without Lua */
  const char *root;
  int rootfd;
  char *rel;
  size_t rel_cap;
  level *levels;
  size_t depth, levels_cap;
  EVP_MD *sha;
  EVP_MD_CTX *md;
  unsigned char *block;
  char link[PATH_MAX];
  int64_t vouch_sec; /* known entries with an mtime before this (and vouch_nsec) are trusted */
  uint32_t vouch_nsec;
  lua_Integer files, dirs, symlinks, bytes, hashed;
  int skipped, temps; /* stack indexes of the lists */
  int temp_tokens;    /* opts.temp_tokens was given (a set of run tokens, or true) */
} walker;

static void level_free(level *l) {
  if (l->fd >= 0) close(l->fd);
  l->fd = -1;
  free(l->names);
  free(l->order);
  l->names = NULL;
  l->order = NULL;
}

static int walker_release(lua_State *L) {
  walker *w = luaL_checkudata(L, 1, WALKER_MT);
  while (w->depth > 0) level_free(&w->levels[--w->depth]);
  free(w->levels);
  w->levels = NULL;
  if (w->rootfd >= 0) close(w->rootfd);
  w->rootfd = -1;
  free(w->rel);
  w->rel = NULL;
  EVP_MD_CTX_free(w->md);
  w->md = NULL;
  EVP_MD_free(w->sha);
  w->sha = NULL;
  free(w->block);
  w->block = NULL;
  return 0;
}

/* nil, "<op> <root>/<rel>: <reason>", code (rel: the first len bytes of w->rel). */
static int fail_at(walker *w, int err, const char *op, size_t len) {
  char code[64];
  ferry_errname(err, code, sizeof code);
  lua_State *L = w->L;
  lua_pushnil(L);
  lua_pushfstring(L, "%s %s/", op, w->root);
  lua_pushlstring(L, w->rel, len);
  lua_pushfstring(L, ": %s", strerror(err));
  lua_concat(L, 3);
  lua_pushstring(L, code);
  return 3;
}

static int limit_at(walker *w, const char *code, const char *why, size_t len) {
  lua_State *L = w->L;
  lua_pushnil(L);
  lua_pushfstring(L, "tree_walk %s/", w->root);
  lua_pushlstring(L, w->rel, len < 200 ? len : 200);
  lua_pushfstring(L, "%s: %s", len < 200 ? "" : "...", why);
  lua_concat(L, 3);
  lua_pushstring(L, code);
  return 3;
}

static int cmp_names(const void *a, const void *b, void *ud) {
  const char *names = ud;
  return strcmp(names + *(const size_t *)a, names + *(const size_t *)b);
}

/* Read the names of the directory open at fd into l, sorted. 0 or an errno. */
static int read_names(int fd, level *l) {
  int dfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (dfd < 0) return errno;
  DIR *d = fdopendir(dfd);
  if (d == NULL) {
    int err = errno;
    close(dfd);
    return err;
  }
  size_t used = 0, cap = 0, ocap = 0;
  int err = 0;
  for (;;) {
    errno = 0;
    struct dirent *e = readdir(d);
    if (e == NULL) {
      err = errno;
      break;
    }
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    size_t len = strlen(e->d_name) + 1;
    if (used + len > cap) {
      size_t c = cap ? cap * 2 : 4096;
      while (c < used + len) c *= 2;
      char *p = realloc(l->names, c);
      if (p == NULL) {
        err = ENOMEM;
        break;
      }
      l->names = p;
      cap = c;
    }
    if (l->count == ocap) {
      size_t c = ocap ? ocap * 2 : 64;
      size_t *p = realloc(l->order, c * sizeof *p);
      if (p == NULL) {
        err = ENOMEM;
        break;
      }
      l->order = p;
      ocap = c;
    }
    memcpy(l->names + used, e->d_name, len);
    l->order[l->count++] = used;
    used += len;
  }
  closedir(d);
  if (err == 0 && l->count > 1) qsort_r(l->order, l->count, sizeof *l->order, cmp_names, l->names);
  return err;
}

/* Put "/name" (or "name" at the top) after level l's rel path; the new length, or 0 when over the limit. */
static size_t set_rel(walker *w, const level *l, const char *name) {
  size_t nl = strlen(name), at = l->rel_len + (l->rel_len ? 1 : 0), len = at + nl;
  if (len > TREE_MAX_PATH) return 0;
  if (len + 1 > w->rel_cap) {
    size_t c = w->rel_cap ? w->rel_cap : 256;
    while (c < len + 1) c *= 2;
    char *p = realloc(w->rel, c);
    if (p == NULL) luaL_error(w->L, "tree_walk: out of memory");
    w->rel = p;
    w->rel_cap = c;
  }
  if (l->rel_len) w->rel[l->rel_len] = '/';
  memcpy(w->rel + at, name, nl + 1);
  return len;
}

/* Reopen the closed directory of level i from the nearest open ancestor. 0 or an errno. */
static int reopen(walker *w, size_t i) {
  size_t a = i;
  while (a > 1 && w->levels[a - 1].fd < 0) a--;
  const level *anc = &w->levels[a - 1]; /* the root's level is never closed: a >= 1 */
  int fd = anc->fd;
  size_t from = anc->rel_len ? anc->rel_len + 1 : 0;
  size_t to = w->levels[i].rel_len;
  char comp[NAME_MAX + 1];
  int cur = -1;
  for (size_t p = from; p < to;) {
    size_t q = p;
    while (q < to && w->rel[q] != '/') q++;
    if (q - p > NAME_MAX) return ENAMETOOLONG;
    memcpy(comp, w->rel + p, q - p);
    comp[q - p] = '\0';
    int next = openat(cur >= 0 ? cur : fd, comp, O_RDONLY | O_DIRECTORY | O_CLOEXEC | (w->follow ? 0 : O_NOFOLLOW));
    int err = errno;
    if (cur >= 0) close(cur);
    if (next < 0) return err;
    cur = next;
    p = q + 1;
  }
  struct stat st;
  if (cur < 0 || fstat(cur, &st) < 0 || (uint64_t)st.st_dev != w->levels[i].dev ||
      (uint64_t)st.st_ino != w->levels[i].ino) {
    if (cur >= 0) close(cur);
    return ENOENT; /* replaced while we walked below it */
  }
  w->levels[i].fd = cur;
  return 0;
}

/* Enter the directory `name` of the top level (rel already set, len bytes). 0, or pushes an error (3). */
static int enter(walker *w, const char *name, size_t len, const struct stat *st) {
  level *parent = &w->levels[w->depth - 1];
  if (w->follow) {
    for (size_t i = 0; i < w->depth; i++)
      if (w->levels[i].dev == (uint64_t)st->st_dev && w->levels[i].ino == (uint64_t)st->st_ino) {
        lua_pushnil(w->L);
        lua_pushfstring(w->L, "%s/", w->root);
        lua_pushlstring(w->L, w->rel, len);
        lua_pushliteral(w->L, ": symlink loop");
        lua_concat(w->L, 3);
        lua_pushliteral(w->L, "ELOOP");
        return 3;
      }
  }
  int fd = openat(parent->fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | (w->follow ? 0 : O_NOFOLLOW));
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT || err == ENOTDIR || err == ELOOP) return 0; /* vanished, or replaced */
    return fail_at(w, err, "readdir", len);
  }
  if (w->depth == w->levels_cap) {
    size_t c = w->levels_cap * 2;
    level *p = realloc(w->levels, c * sizeof *p);
    if (p == NULL) {
      close(fd);
      return luaL_error(w->L, "tree_walk: out of memory");
    }
    w->levels = p;
    w->levels_cap = c;
  }
  level *l = &w->levels[w->depth++];
  memset(l, 0, sizeof *l);
  l->fd = fd;
  l->rel_len = len;
  l->dev = (uint64_t)st->st_dev;
  l->ino = (uint64_t)st->st_ino;
  int err = read_names(fd, l);
  if (err == ENOMEM) return luaL_error(w->L, "tree_walk: out of memory");
  if (err) return fail_at(w, err, "readdir", len);
  if (w->depth > FD_DEPTH) { /* keep the number of open descriptors bounded */
    level *old = &w->levels[w->depth - 1 - FD_DEPTH];
    if (old->fd >= 0 && old != &w->levels[0]) {
      close(old->fd);
      old->fd = -1;
    }
  }
  return 0;
}

static int all_hex(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!isxdigit((unsigned char)p[i])) return 0;
  return 1;
}

/* A temp name of fs.c's safe writes (".ferry-tmp-<16 hex run token>-<16 hex>") whose run token is one of
 * opts.temp_tokens (a set of tokens, or true for any run): a write a ferry run left behind. Any other name,
 * however alike, is the user's. */
static int is_temp_name(walker *w, const char *name) {
  if (w->temp_tokens == 0) return 0;
  size_t n = sizeof FERRY_TMP_PREFIX - 1, tok = 16;
  if (strncmp(name, FERRY_TMP_PREFIX, n) != 0 || strlen(name) != n + tok + 1 + 16) return 0;
  const char *token = name + n;
  if (!all_hex(token, tok) || token[tok] != '-' || !all_hex(token + tok + 1, 16)) return 0;
  lua_State *L = w->L;
  lua_getfield(L, 2, "temp_tokens"); /* opts is argument 2 */
  int known = lua_toboolean(L, -1);
  if (lua_istable(L, -1)) {
    lua_pushlstring(L, token, tok);
    known = lua_rawget(L, -2) == LUA_TBOOLEAN && lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return known;
}

static void list_add(walker *w, int list, size_t len) {
  lua_pushlstring(w->L, w->rel, len);
  lua_rawseti(w->L, list, (lua_Integer)lua_rawlen(w->L, list) + 1);
}

static int excluded(walker *w, size_t len, int is_dir) {
  if (w->matcher) { /* the walk never enters an excluded directory: rel alone decides */
    int verdict = ferry_exclude_decide(w->matcher, w->rel, len, is_dir);
    if (verdict < 0) luaL_error(w->L, "tree_walk: out of memory");
    return verdict;
  }
  if (!w->exclude) return 0;
  lua_pushvalue(w->L, w->exclude);
  lua_pushlstring(w->L, w->rel, len);
  lua_pushboolean(w->L, is_dir);
  lua_call(w->L, 2, 1);
  int out = lua_toboolean(w->L, -1);
  lua_pop(w->L, 1);
  return out;
}

/* The sha256 the known tree vouches for (rel, st), or NULL. */
static const unsigned char *vouched(walker *w, size_t len, const struct stat *st) {
  const ferry_tree *k = w->known;
  if (k == NULL || !k->has_taken) return NULL;
  while (w->kpos < k->n && ferry_tree_cmp(tree_path(k, &k->e[w->kpos]), k->e[w->kpos].path_len, w->rel, len) < 0)
    w->kpos++;
  if (w->kpos >= k->n) return NULL;
  const tree_entry *x = &k->e[w->kpos];
  if (x->dead || x->path_len != len || memcmp(tree_path(k, x), w->rel, len) != 0) return NULL;
  if (x->kind != TREE_FILE || !x->has_sha || x->mode != (st->st_mode & 07777) || x->size != (uint64_t)st->st_size ||
      x->ino != (uint64_t)st->st_ino || x->mtime_sec != (int64_t)st->st_mtim.tv_sec ||
      x->nsec != (uint32_t)st->st_mtim.tv_nsec)
    return NULL;
  if (x->mtime_sec > w->vouch_sec || (x->mtime_sec == w->vouch_sec && x->nsec >= w->vouch_nsec)) return NULL;
  return x->sha;
}

/* Hash `name` in dirfd into md. 0, ENOENT when it vanished or is no file now, or an errno. */
static int hash_file(walker *w, int dirfd, const char *name, unsigned char *md) {
  int fd;
  do fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | (w->follow ? 0 : O_NOFOLLOW));
  while (fd < 0 && errno == EINTR);
  if (fd < 0) return errno == ELOOP ? ENOENT : errno;
  struct stat st;
  int err = 0;
  if (fstat(fd, &st) < 0) err = errno;
  else if (!S_ISREG(st.st_mode)) err = ENOENT;
  if (!err && !EVP_DigestInit_ex2(w->md, w->sha, NULL)) err = ENOMEM;
  while (!err) {
    ssize_t n = read(fd, w->block, BLOCK);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) err = errno;
    else if (n == 0) break;
    else if (!EVP_DigestUpdate(w->md, w->block, (size_t)n)) err = ENOMEM;
  }
  close(fd);
  if (!err && !EVP_DigestFinal_ex(w->md, md, NULL)) err = ENOMEM;
  return err;
}

static int kind_of(mode_t m) {
  return S_ISREG(m) ? TREE_FILE : S_ISDIR(m) ? TREE_DIR : S_ISLNK(m) ? TREE_SYMLINK : 0;
}

/* lstat, or with follow a stat that falls back to lstat for a dangling symlink. */
static int inspect(walker *w, int dirfd, const char *name, struct stat *st) {
  if (fstatat(dirfd, name, st, w->follow ? 0 : AT_SYMLINK_NOFOLLOW) == 0) return 0;
  int err = errno;
  if (w->follow && err == ENOENT && fstatat(dirfd, name, st, AT_SYMLINK_NOFOLLOW) == 0) return 0;
  return err;
}

/* One name of the top level. 0, or the number of values pushed for an error. */
static int visit(walker *w, const char *name) {
  level *l = &w->levels[w->depth - 1];
  size_t len = set_rel(w, l, name);
  if (len == 0) {
    set_rel(w, l, ""); /* the parent's path, for the message */
    return limit_at(w, "ENAMETOOLONG", "a path longer than 65535 bytes below it", l->rel_len);
  }
  struct stat st;
  int err = inspect(w, l->fd, name, &st);
  if (err == ENOENT) return 0;
  if (err) return fail_at(w, err, "lstat", len);
  int kind = kind_of(st.st_mode);
  if ((kind == TREE_FILE || kind == TREE_SYMLINK) && is_temp_name(w, name)) {
    list_add(w, w->temps, len);
    return 0;
  }
  if (excluded(w, len, kind == TREE_DIR)) return 0;
  l = &w->levels[w->depth - 1];
  if (kind == 0) {
    list_add(w, w->skipped, len);
    return 0;
  }
  tree_fields f = {.kind = kind, .mode = st.st_mode & 07777, .ino = (uint64_t)st.st_ino, .dev = (uint64_t)st.st_dev,
                   .mtime_sec = (int64_t)st.st_mtim.tv_sec, .nsec = (uint32_t)st.st_mtim.tv_nsec};
  unsigned char md[32];
  if (kind == TREE_FILE) {
    f.size = (uint64_t)st.st_size;
    if (w->hash) {
      f.sha = vouched(w, len, &st);
      if (f.sha == NULL) {
        err = hash_file(w, l->fd, name, md);
        if (err == ENOENT) return 0;
        if (err == ENOMEM) return luaL_error(w->L, "tree_walk: sha256 failed");
        if (err) return fail_at(w, err, "sha256", len);
        f.sha = md;
        w->hashed++;
      }
    }
  } else if (kind == TREE_SYMLINK) {
    ssize_t n = readlinkat(l->fd, name, w->link, sizeof w->link);
    if (n < 0 && (errno == ENOENT || errno == EINVAL)) return 0; /* vanished, or no symlink now */
    if (n < 0 || n == (ssize_t)sizeof w->link) return fail_at(w, n < 0 ? errno : ENAMETOOLONG, "readlink", len);
    f.link = w->link;
    f.link_len = (size_t)n;
  }
  const char *why;
  if (ferry_tree_append(w->t, w->rel, len, &f, &why) < 0) {
    if (strcmp(why, "out of memory") == 0) return luaL_error(w->L, "tree_walk: out of memory");
    return limit_at(w, "E2BIG", why, len);
  }
  if (kind == TREE_FILE) {
    w->files++;
    w->bytes += (lua_Integer)st.st_size;
  } else if (kind == TREE_SYMLINK) {
    w->symlinks++;
  } else {
    w->dirs++;
    return enter(w, name, len, &st);
  }
  return 0;
}

static int walk(walker *w) {
  while (w->depth > 0) {
    level *l = &w->levels[w->depth - 1];
    if (l->next == l->count) {
      level_free(l);
      w->depth--;
      continue;
    }
    if (l->fd < 0) {
      set_rel(w, l, ""); /* reopen reads the level's own path from w->rel */
      int err = reopen(w, w->depth - 1);
      if (err) { /* it went away while we were below it */
        l->next = l->count;
        continue;
      }
    }
    int pushed = visit(w, l->names + l->order[l->next++]);
    if (pushed) return pushed;
  }
  return 0;
}

static void set_count(lua_State *L, int info, const char *key, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, info, key);
}

static void read_opts(lua_State *L, walker *w) {
  if (lua_isnoneornil(L, 2)) return;
  if (!lua_istable(L, 2)) luaL_error(L, "tree_walk: opts must be a table, got %s", luaL_typename(L, 2));
  lua_getfield(L, 2, "hash");
  w->hash = lua_toboolean(L, -1);
  lua_getfield(L, 2, "follow_symlinks");
  w->follow = lua_toboolean(L, -1);
  lua_pop(L, 2);
  if (lua_getfield(L, 2, "known") != LUA_TNIL) w->known = ferry_tree_check(L, -1, "tree_walk", "opts.known");
  lua_pop(L, 1);
  int tt = lua_getfield(L, 2, "temp_tokens");
  if (tt != LUA_TNIL && tt != LUA_TTABLE && tt != LUA_TBOOLEAN)
    luaL_error(L, "tree_walk: opts.temp_tokens must be a table or a boolean, got %s", luaL_typename(L, -1));
  w->temp_tokens = tt != LUA_TNIL;
  lua_pop(L, 1);
  int t = lua_getfield(L, 2, "exclude");
  w->matcher = ferry_exclude_test(L, -1); /* anchored by opts */
  if (t != LUA_TNIL && t != LUA_TFUNCTION && w->matcher == NULL)
    luaL_error(L, "tree_walk: opts.exclude must be a function or an exclude matcher, got %s", luaL_typename(L, -1));
  lua_pop(L, 1);
}

static int l_tree_walk(lua_State *L) {
  const char *root = ferry_check_path(L, 1, "tree_walk", "root", NULL);
  lua_settop(L, 2);
  walker *w = lua_newuserdatauv(L, sizeof *w, 0); /* 3 */
  memset(w, 0, sizeof *w);
  w->rootfd = -1;
  luaL_setmetatable(L, WALKER_MT);
  lua_toclose(L, 3);
  w->L = L;
  w->root = root;
  read_opts(L, w);
  if (lua_istable(L, 2)) lua_getfield(L, 2, "exclude"); /* 4: the function or nil */
  else lua_pushnil(L);
  if (!lua_isnil(L, 4) && w->matcher == NULL) w->exclude = 4;
  if (w->known) { /* anchored by opts */
    int64_t sec = w->known->taken_sec - RACY_SECONDS;
    w->vouch_sec = sec;
    w->vouch_nsec = w->known->taken_nsec;
  }
  w->t = ferry_tree_push(L); /* 5 */
  lua_newtable(L);           /* 6: skipped */
  lua_newtable(L);           /* 7: temps */
  w->skipped = 6;
  w->temps = 7;
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  w->t->taken_sec = now.tv_sec;
  w->t->taken_nsec = (uint32_t)now.tv_nsec;
  w->t->has_taken = 1;
  struct stat st;
  if (stat(root, &st) < 0) return ferry_sys_fail(L, errno, "stat", root);
  if (!S_ISDIR(st.st_mode)) return ferry_fail(L, "ENOTDIR", "tree_walk %s: not a directory", root);
  w->rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (w->rootfd < 0) return ferry_sys_fail(L, errno, "readdir", root);
  w->levels_cap = 16;
  w->levels = calloc(w->levels_cap, sizeof *w->levels);
  w->block = w->hash ? malloc(BLOCK) : NULL;
  w->md = w->hash ? EVP_MD_CTX_new() : NULL;
  w->sha = w->hash ? EVP_MD_fetch(NULL, "SHA256", NULL) : NULL;
  if (!w->levels || (w->hash && (!w->block || !w->md || !w->sha))) return luaL_error(L, "tree_walk: out of memory");
  level *top = &w->levels[0];
  top->fd = fcntl(w->rootfd, F_DUPFD_CLOEXEC, 3);
  if (top->fd < 0) return ferry_sys_fail(L, errno, "readdir", root);
  top->dev = (uint64_t)st.st_dev;
  top->ino = (uint64_t)st.st_ino;
  w->depth = 1;
  int err = read_names(top->fd, top);
  if (err == ENOMEM) return luaL_error(L, "tree_walk: out of memory");
  if (err) return ferry_sys_fail(L, err, "readdir", root);
  int pushed = walk(w);
  if (pushed) return pushed;
  ferry_tree_trim(w->t);
  lua_createtable(L, 0, 7); /* 8: info */
  set_count(L, 8, "files", w->files);
  set_count(L, 8, "dirs", w->dirs);
  set_count(L, 8, "symlinks", w->symlinks);
  set_count(L, 8, "bytes", w->bytes);
  set_count(L, 8, "hashed", w->hashed);
  lua_pushvalue(L, 6);
  lua_setfield(L, 8, "skipped");
  lua_pushvalue(L, 7);
  lua_setfield(L, 8, "temps");
  lua_pushvalue(L, 5);
  lua_pushvalue(L, 8);
  return 2;
}

void ferry_open_tree_walk(lua_State *L) {
  static const luaL_Reg meta[] = {{"__close", walker_release}, {"__gc", walker_release}, {NULL, NULL}};
  ferry_new_class(L, WALKER_MT, meta, NULL);
  lua_pushcfunction(L, l_tree_walk);
  lua_setfield(L, -2, "tree_walk");
}
