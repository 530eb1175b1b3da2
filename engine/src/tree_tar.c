/* A tar stream read into a tree: what restore receives from the sandbox, named, checked for what no tree
 * can hold and hashed in one pass, without a Lua table per entry.
 *
 * core.tar_scan_tree(path[, opts]) -> tree, info | nil, message, code
 *   opts.max_bytes (1 GiB of content), opts.max_entries (1e6), opts.exclude = fn(rel, is_dir) -> true to
 *   ignore the entry (as ferry.guard's excludes and skipped top-level names), or an exclude matcher;
 *   opts.max_path: refuse, as ferry.guard does, a member name over max_path + 16 bytes (excluded or not) and a
 *   path kept over max_path bytes, with a component over 255 bytes or over 256 components deep;
 *   opts.members: paths (as normalised) to leave out of the tree and report in info.members[rel] = {name,
 *   kind, size} (ferry's own files that come with the stream), whatever the excludes say
 *   Each member name becomes a path as ferry.guard.normalise reads it ("./" prefixes and trailing '/'
 *   dropped; the tree keeps their count, so t:get(rel).name and the iterator's `name` give the member name
 *   back). Files are hashed (sha256); modes are the archive's & 07777; directories the archive implies but
 *   does not list are added (mode 0755, implied = true).
 *   An entry's ino is its place in the archive (1 for the first member; 0 for an implied dir).
 *   info: {entries (members read), bytes (file content), ignored (members left out: excluded, or the "."
 *   self entry), members, refused = {{name, reason, at (the member's place)}...}} in archive order, with
 *   ferry.guard's reasons: "absolute path", "'..' path component", "malformed path (empty or '.' component)",
 *   "self entry that is not a directory", "hard link", "device", "fifo", "socket", "unsupported entry type",
 *   the limits' reasons, "duplicate entry" (the
 *   first member of a path stays in the tree), "parent <p> is a symlink in the archive", "parent <p> is not
 *   a directory in the archive"; and beyond the guard's: "malformed path (over 255 './' prefixes or trailing
 *   '/')", "path longer than 65535 bytes", "symlink target longer than 32767 bytes". Refused members are not
 *   in the tree but for the last two parent reasons.
 *   Errors: "archive exceeds the N byte limit at <name>" and "archive exceeds the N entry limit at <name>"
 *   (EFBIG); "bad archive: <reason>" (EINVAL); "tar_scan_tree <path>: <reason>" for the file itself.
 *
 * It reads archives with tar_reader.c's reader (ferry_tar_open: tar and empty formats, a UTF-8 locale pinned so
 * names stay bytes).
 */
#include <stdlib.h>
#include <string.h>

#include <archive.h>
#include <archive_entry.h>

#include "tree.h"

#define SCAN_MT "ferry.tree_scan"
#define DEFAULT_MAX_BYTES ((lua_Integer)1 << 30)
#define DEFAULT_MAX_ENTRIES 1000000

typedef struct refusal {
  size_t at;                /* the member's place in the archive */
  size_t name_off, why_off; /* in names */
} refusal;

typedef struct scan {
  lua_State *L;
  ferry_tar_in in;
  refusal *refused;
  size_t nrefused, rcap;
  char *names; /* the refused names and built reasons, NUL-terminated */
  size_t nused, ncap;
  int exclude; /* stack index of the function, or 0 */
  ferry_exclude *matcher; /* or a matcher, asked in C */
  ferry_tree *t;
} scan;

static int scan_release(lua_State *L) {
  scan *s = luaL_checkudata(L, 1, SCAN_MT);
  ferry_tar_close(&s->in);
  free(s->refused);
  s->refused = NULL;
  free(s->names);
  s->names = NULL;
  return 0;
}

/* Copy len bytes (and a NUL) into s->names; their offset. Raises when out of memory. */
static size_t keep_bytes(scan *s, const char *p, size_t len) {
  if (s->nused + len + 1 > s->ncap) {
    size_t c = s->ncap ? s->ncap : 1024;
    while (c < s->nused + len + 1) c *= 2;
    char *q = realloc(s->names, c);
    if (q == NULL) luaL_error(s->L, "tar_scan_tree: out of memory");
    s->names = q;
    s->ncap = c;
  }
  memcpy(s->names + s->nused, p, len);
  s->names[s->nused + len] = '\0';
  size_t off = s->nused;
  s->nused += len + 1;
  return off;
}

/* Refuse the member at `at` named name[0..len) for `why`. */
static void refuse(scan *s, size_t at, const char *name, size_t len, const char *why) {
  if (s->nrefused == s->rcap) {
    size_t c = s->rcap ? s->rcap * 2 : 16;
    refusal *q = realloc(s->refused, c * sizeof *q);
    if (q == NULL) luaL_error(s->L, "tar_scan_tree: out of memory");
    s->refused = q;
    s->rcap = c;
  }
  size_t name_off = keep_bytes(s, name, len);
  size_t why_off = keep_bytes(s, why, strlen(why));
  s->refused[s->nrefused++] = (refusal){at, name_off, why_off};
}

/* Refuse tree entry x (its member name rebuilt) for why. */
static void refuse_entry(scan *s, tree_entry *x, const char *why) {
  ferry_tree_push_name(s->L, s->t, x);
  size_t len;
  const char *name = lua_tolstring(s->L, -1, &len);
  refuse(s, (size_t)x->ino - 1, name, len, why);
  lua_pop(s->L, 1);
  x->dead = 1;
  s->t->dead++;
}

/* A member name as a path (guard.normalise): rel and len, the "./" and trailing '/' counts; "" for the self
 * entry. NULL or why it is refused. */
static const char *normalise(const char *name, const char **rel, size_t *len, unsigned *dots, unsigned *slashes) {
  *dots = *slashes = 0;
  *rel = name;
  *len = 0;
  if (name[0] == '/') return "absolute path";
  size_t n = strlen(name);
  while (n >= 2 && name[0] == '.' && name[1] == '/') {
    name += 2;
    n -= 2;
    (*dots)++;
  }
  while (n > 0 && name[n - 1] == '/') {
    n--;
    (*slashes)++;
  }
  *rel = name;
  *len = n;
  if (n == 0 || (n == 1 && name[0] == '.')) {
    *len = 0;
    return NULL;
  }
  for (size_t i = 0; i <= n;) {
    size_t j = i;
    while (j < n && name[j] != '/') j++;
    size_t c = j - i;
    if (c == 2 && name[i] == '.' && name[i + 1] == '.') return "'..' path component";
    if (c == 0 || (c == 1 && name[i] == '.')) return "malformed path (empty or '.' component)";
    i = j + 1;
  }
  if (*dots > TREE_MAX_PREFIX || *slashes > TREE_MAX_PREFIX)
    return "malformed path (over 255 './' prefixes or trailing '/')";
  if (n > TREE_MAX_PATH) return "path longer than 65535 bytes";
  return NULL;
}

static const char *special(struct archive_entry *e) {
  if (archive_entry_hardlink(e) != NULL) return "hard link";
  switch (archive_entry_filetype(e)) {
  case AE_IFREG: case AE_IFDIR: case AE_IFLNK: return NULL;
  case AE_IFCHR: case AE_IFBLK: return "device";
  case AE_IFIFO: return "fifo";
  case AE_IFSOCK: return "socket";
  default: return "unsupported entry type";
  }
}

/* opts.exclude(rel, is_dir), run in the thread's own locale (scan_release puts it back if it raises). */
static int excluded(scan *s, const char *rel, size_t len, int is_dir) {
  if (s->matcher) {
    int verdict = ferry_exclude_match(s->matcher, rel, len, is_dir);
    if (verdict < 0) luaL_error(s->L, "tar_scan_tree: out of memory");
    return verdict;
  }
  if (!s->exclude) return 0;
  lua_pushvalue(s->L, s->exclude);
  lua_pushlstring(s->L, rel, len);
  lua_pushboolean(s->L, is_dir);
  if (s->in.loc) uselocale(s->in.old);
  lua_call(s->L, 2, 1);
  if (s->in.loc) uselocale(s->in.loc);
  int out = lua_toboolean(s->L, -1);
  lua_pop(s->L, 1);
  return out;
}

/* The archive's index of each entry rides in its ino slot (tar entries have none): the scan keeps it there,
 * for a caller that orders what it finds by the archive's order. */
static void on_duplicate(ferry_tree *t, const tree_entry *x, void *ud) {
  scan *s = ud;
  ferry_tree_push_name(s->L, t, x);
  size_t len;
  const char *name = lua_tolstring(s->L, -1, &len);
  refuse(s, (size_t)x->ino - 1, name, len, "duplicate entry");
  lua_pop(s->L, 1);
}

/* Refuse every entry below a symlink or a file of the archive, naming the topmost such parent. */
static void check_parents(scan *s) {
  ferry_tree *t = s->t;
  size_t bad = (size_t)-1;
  for (size_t i = 0; i < t->n; i++) {
    tree_entry *x = &t->e[i];
    const char *p = tree_path(t, x);
    if (bad != (size_t)-1) {
      const tree_entry *b = &t->e[bad];
      if (x->path_len > b->path_len && p[b->path_len] == '/' && memcmp(tree_path(t, b), p, b->path_len) == 0) {
        lua_pushliteral(s->L, "parent ");
        lua_pushlstring(s->L, tree_path(t, b), b->path_len);
        lua_pushstring(s->L, b->kind == TREE_SYMLINK ? " is a symlink in the archive"
                                                     : " is not a directory in the archive");
        lua_concat(s->L, 3);
        refuse_entry(s, x, lua_tostring(s->L, -1));
        lua_pop(s->L, 1);
        continue;
      }
      bad = (size_t)-1;
    }
    if (x->kind != TREE_DIR) bad = i;
  }
}

/* opts[field] as a non-negative integer, or dflt. */
static lua_Integer opt_limit(lua_State *L, const char *field, lua_Integer dflt) {
  if (lua_isnoneornil(L, 2)) return dflt;
  lua_getfield(L, 2, field);
  lua_Integer v = dflt;
  if (!lua_isnil(L, -1)) {
    int ok;
    v = lua_tointegerx(L, -1, &ok);
    if (!ok || v < 0) luaL_error(L, "tar_scan_tree: opts.%s must be a non-negative integer", field);
  }
  lua_pop(L, 1);
  return v;
}

typedef struct limits {
  lua_Integer max_bytes, max_entries;
  lua_Integer max_path; /* bytes of a path (0: only the tree's own limit); components at most 255, 256 deep */
  int64_t total;
  size_t entries, ignored;
  int members; /* stack index of opts.members as a set (rel -> true), or 0 */
  int found;   /* stack index of info.members */
} limits;

#define MAX_COMPONENT 255
#define MAX_DEPTH 256

/* Why rel (len bytes) is too long or too deep to write, or NULL (ferry.guard's reasons). */
static const char *over_limits(lua_State *L, const char *rel, size_t len, lua_Integer max_path) {
  if (max_path == 0) return NULL;
  if ((lua_Integer)len > max_path) return lua_pushfstring(L, "path longer than %I bytes", max_path);
  size_t depth = 0, longest = 0;
  for (size_t i = 0; i <= len;) {
    size_t j = i;
    while (j < len && rel[j] != '/') j++;
    if (j - i > longest) longest = j - i;
    depth++;
    i = j + 1;
  }
  if (longest > MAX_COMPONENT) return lua_pushfstring(L, "path component longer than %d bytes", MAX_COMPONENT);
  if (depth > MAX_DEPTH) return lua_pushfstring(L, "path deeper than %d components", MAX_DEPTH);
  return NULL;
}

/* A member opts.members names: recorded in info.members as {name, kind, size}, left out of the tree. */
static int take_named(lua_State *L, limits *lim, struct archive_entry *e, const char *rel, size_t len) {
  if (!lim->members) return 0;
  lua_pushlstring(L, rel, len);
  int listed = lua_rawget(L, lim->members) != LUA_TNIL;
  lua_pop(L, 1);
  if (!listed) return 0;
  lua_pushlstring(L, rel, len);
  lua_createtable(L, 0, 3);
  lua_pushstring(L, archive_entry_pathname(e));
  lua_setfield(L, -2, "name");
  int hard = archive_entry_hardlink(e) != NULL;
  lua_pushstring(L, hard ? "hardlink" : ferry_kind_name(archive_entry_filetype(e)));
  lua_setfield(L, -2, "kind");
  lua_pushinteger(L, (lua_Integer)archive_entry_size(e));
  lua_setfield(L, -2, "size");
  lua_rawset(L, lim->found);
  return 1;
}

/* One member into the tree (or the refusals). 0, or the number of values pushed for a failure. */
static int take_member(scan *s, struct archive_entry *e, limits *lim) {
  lua_State *L = s->L;
  const char *name = archive_entry_pathname(e), *rel = name;
  size_t at = lim->entries, len = 0, name_len = strlen(name);
  unsigned dots = 0, slashes = 0;
  int top = lua_gettop(L);
  const char *why = lim->max_path && (lua_Integer)name_len > lim->max_path + 16
                        ? lua_pushfstring(L, "path longer than %I bytes", lim->max_path)
                        : normalise(name, &rel, &len, &dots, &slashes);
  int is_file = archive_entry_filetype(e) == AE_IFREG && archive_entry_hardlink(e) == NULL;
  int kind = is_file ? TREE_FILE : archive_entry_filetype(e) == AE_IFDIR ? TREE_DIR : TREE_SYMLINK;
  int keep = 0;
  if (why == NULL && len == 0) {
    if (kind == TREE_DIR && !special(e)) lim->ignored++;
    else why = "self entry that is not a directory";
  } else if (why == NULL && take_named(L, lim, e, rel, len)) {
    /* recorded in info.members */
  } else if (why == NULL && excluded(s, rel, len, kind == TREE_DIR && !special(e))) {
    lim->ignored++;
  } else if (why == NULL && (why = over_limits(L, rel, len, lim->max_path)) == NULL && (why = special(e)) == NULL) {
    keep = 1;
  }
  if (why) refuse(s, at, name, name_len, why);
  lua_settop(L, top);
  int64_t size = archive_entry_size(e);
  if (is_file && size > lim->max_bytes - lim->total)
    return ferry_fail(L, "EFBIG", "archive exceeds the %I byte limit at %s", lim->max_bytes, name);
  if (!keep) {
    if (is_file) lim->total += size; /* not read: counted as declared */
    return 0;
  }
  tree_fields f = {.kind = kind, .mode = (unsigned)(archive_entry_perm(e) & 07777), .ino = at + 1,
                   .mtime_sec = (int64_t)archive_entry_mtime(e), .nsec = (uint32_t)archive_entry_mtime_nsec(e),
                   .dots = dots, .slashes = slashes};
  unsigned char md[32];
  if (kind == TREE_FILE) {
    int err = ferry_tar_pump(&s->in, &lim->total, lim->max_bytes, md, NULL);
    if (err == -1) return ferry_tar_bad(L, &s->in);
    if (err == -2) return ferry_fail(L, "EFBIG", "archive exceeds the %I byte limit at %s", lim->max_bytes, name);
    if (err) return luaL_error(L, "tar_scan_tree: sha256 failed");
    f.size = (uint64_t)size;
    f.sha = md;
  } else if (kind == TREE_SYMLINK) {
    f.link = archive_entry_symlink(e);
    f.link_len = f.link ? strlen(f.link) : 0;
    if (f.link_len > TREE_MAX_LINK) {
      refuse(s, at, name, strlen(name), "symlink target longer than 32767 bytes");
      return 0;
    }
  }
  if (f.nsec >= TREE_NSEC) f.nsec = 0;
  const char *limit;
  if (ferry_tree_append(s->t, rel, len, &f, &limit) < 0) return luaL_error(L, "tar_scan_tree: %s", limit);
  return 0;
}

static int by_place(const void *a, const void *b) {
  size_t x = ((const refusal *)a)->at, y = ((const refusal *)b)->at;
  return x < y ? -1 : x > y;
}

static void push_info(lua_State *L, scan *s, const limits *lim) {
  lua_createtable(L, 0, 5);
  lua_pushvalue(L, lim->found);
  lua_setfield(L, -2, "members");
  lua_pushinteger(L, (lua_Integer)lim->entries);
  lua_setfield(L, -2, "entries");
  lua_pushinteger(L, (lua_Integer)lim->total);
  lua_setfield(L, -2, "bytes");
  lua_pushinteger(L, (lua_Integer)lim->ignored);
  lua_setfield(L, -2, "ignored");
  if (s->nrefused > 1) qsort(s->refused, s->nrefused, sizeof *s->refused, by_place);
  lua_createtable(L, (int)s->nrefused, 0);
  for (size_t i = 0; i < s->nrefused; i++) {
    lua_createtable(L, 0, 3);
    lua_pushstring(L, s->names + s->refused[i].name_off);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, s->names + s->refused[i].why_off);
    lua_setfield(L, -2, "reason");
    lua_pushinteger(L, (lua_Integer)s->refused[i].at + 1);
    lua_setfield(L, -2, "at");
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_setfield(L, -2, "refused");
}

static int l_tar_scan_tree(lua_State *L) {
  const char *path = ferry_check_path(L, 1, "tar_scan_tree", "path", NULL);
  if (!lua_isnoneornil(L, 2) && !lua_istable(L, 2))
    return luaL_error(L, "tar_scan_tree: opts must be a table, got %s", luaL_typename(L, 2));
  limits lim = {opt_limit(L, "max_bytes", DEFAULT_MAX_BYTES), opt_limit(L, "max_entries", DEFAULT_MAX_ENTRIES),
                opt_limit(L, "max_path", 0), 0, 0, 0, 0, 0};
  lua_settop(L, 2);
  if (lua_istable(L, 2)) lua_getfield(L, 2, "exclude");
  else lua_pushnil(L); /* 3 */
  ferry_exclude *matcher = ferry_exclude_test(L, 3);
  if (!lua_isnil(L, 3) && !lua_isfunction(L, 3) && matcher == NULL)
    return luaL_error(L, "tar_scan_tree: opts.exclude must be a function or an exclude matcher, got %s",
                      luaL_typename(L, 3));
  scan *s = lua_newuserdatauv(L, sizeof *s, 0); /* 4 */
  memset(s, 0, sizeof *s);
  luaL_setmetatable(L, SCAN_MT);
  lua_toclose(L, 4);
  s->L = L;
  s->matcher = matcher;
  s->exclude = lua_isnil(L, 3) || matcher ? 0 : 3;
  s->t = ferry_tree_push(L); /* 5 */
  lua_newtable(L);           /* 6: info.members */
  lim.found = 6;
  if (lua_istable(L, 2) && lua_getfield(L, 2, "members") != LUA_TNIL) { /* 7: the set of their rels */
    if (!lua_istable(L, 7)) return luaL_error(L, "tar_scan_tree: opts.members must be a list of paths");
    lua_newtable(L);
    for (lua_Integer i = 1; lua_rawgeti(L, 7, i) == LUA_TSTRING; i++) {
      lua_pushboolean(L, 1);
      lua_rawset(L, 8);
    }
    lua_pop(L, 1);
    lua_replace(L, 7);
    lim.members = 7;
  }
  int pushed = ferry_tar_open(L, &s->in, "tar_scan_tree", path);
  if (pushed) return pushed;
  struct archive_entry *e;
  int rc;
  while ((rc = ferry_tar_next(&s->in, &e)) != 0) {
    if (rc < 0) return ferry_tar_bad(L, &s->in);
    const char *name = archive_entry_pathname(e);
    if ((lua_Integer)lim.entries >= lim.max_entries)
      return ferry_fail(L, "EFBIG", "archive exceeds the %I entry limit at %s", lim.max_entries, name);
    pushed = take_member(s, e, &lim);
    if (pushed) return pushed;
    lim.entries++;
  }
  if (ferry_tree_settle_with(s->t, 1, on_duplicate, s) < 0) return luaL_error(L, "tar_scan_tree: out of memory");
  check_parents(s);
  if (ferry_tree_fill_parents(s->t) < 0) return luaL_error(L, "tar_scan_tree: out of memory");
  lua_pushvalue(L, 5);
  push_info(L, s, &lim);
  return 2;
}

void ferry_open_tree_tar(lua_State *L) {
  static const luaL_Reg meta[] = {{"__close", scan_release}, {"__gc", scan_release}, {NULL, NULL}};
  ferry_new_class(L, SCAN_MT, meta, NULL);
  lua_pushcfunction(L, l_tar_scan_tree);
  lua_setfield(L, -2, "tar_scan_tree");
}
