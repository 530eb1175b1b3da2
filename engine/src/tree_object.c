/* The compact tree: every path of a workspace, a tar stream or a listing, with what ferry compares of it,
 * in one C array (72 bytes an entry) and one byte arena (paths, link targets), in path order (tree.h).
 *
 * core.tree_new() -> an empty tree
 * core.tree_path_less(a, b) -> true when path a sorts before path b (for table.sort in the tree's order:
 *   byte order with '/' before every other byte; a directory precedes its contents, a subtree is contiguous)
 * t:add(rel, fields)  fields: kind ("file"|"dir"|"symlink"|"other", required), mode (0..07777), size, mtime
 *   (seconds, a number) or mtime_ns (integer nanoseconds since the epoch, exact), ino, dev, sha256 (64 hex
 *   digits), target (symlinks), flags (0..255, the caller's). Adds may come in any order; adding a path again
 *   replaces it. rel: relative, '/'-separated, no empty, '.' or '..' component, at most 65535 bytes.
 * t:get(rel) -> {kind, mode, size, mtime, mtime_ns, ino, dev, sha256, target, flags, implied, name} | nil
 *   (sha256 nil when unknown; target for symlinks; implied true for a directory only implied by its contents;
 *   name: the tar member name when it is not rel itself)
 * t:count() (also #t) -> entries;  t:bytes() -> bytes of memory the tree holds
 * t:iter([from[, fields[, kinds]]]) -> iterator over the entries at or after path `from`, in path order,
 *   returning rel then the named fields ("kind size sha256" unless given; any of kind mode size mtime mtime_ns
 *   ino dev sha256 target flags implied name, separated by spaces or commas); with kinds ("dir symlink", ...)
 *   only the entries of those kinds. Raises when an add out of order moved the entries meanwhile.
 * t:set_sha256(rel, hex|nil) -> true | nil, "tree: no entry '<rel>'", "ENOENT" | nil, "tree: '<rel>' is a
 *   <kind>, not a file", "EINVAL"
 * t:set_flags(rel, flags) -> the previous flags | nil, "tree: no entry '<rel>'", "ENOENT"
 * t:remove(rel) -> true, or false when absent
 * t:taken_at([seconds]) -> when the walk that made the tree started (nil if unknown); a number sets it
 * t:under(rel) -> the number of entries below rel ("" for the whole tree)
 * Misuse raises "tree: <method>: <what is wrong>"; a tree over its limits raises "tree: <why>".
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tree.h"

#define DEFAULT_FIELDS "kind size sha256"

static int l_tree_gc(lua_State *L) {
  ferry_tree_free(luaL_checkudata(L, 1, TREE_MT));
  return 0;
}

static int l_tree_new(lua_State *L) {
  ferry_tree_push(L);
  return 1;
}

static const char *check_rel(lua_State *L, int idx, const char *fn, size_t *len) {
  const char *s = ferry_check_string(L, idx, fn, "rel", len);
  if (!ferry_fs_rel_ok(s, *len))
    luaL_error(L, "%s: rel must be a relative path without empty, '.' or '..' components, got '%s'", fn, s);
  if (*len > TREE_MAX_PATH) luaL_error(L, "%s: rel is longer than 65535 bytes", fn);
  return s;
}

static int hex_value(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* 64 hex digits (either case) into 32 bytes; 0 or -1. */
static int parse_hex(const char *s, size_t len, unsigned char *out) {
  if (len != 64) return -1;
  for (size_t i = 0; i < 32; i++) {
    int hi = hex_value((unsigned char)s[2 * i]), lo = hex_value((unsigned char)s[2 * i + 1]);
    if (hi < 0 || lo < 0) return -1;
    out[i] = (unsigned char)(hi << 4 | lo);
  }
  return 0;
}

static const char *const KIND_WORDS[] = {"file", "dir", "symlink", "other", NULL};

static lua_Integer opt_int(lua_State *L, int idx, const char *field, lua_Integer lo, lua_Integer hi) {
  lua_Integer v = 0;
  if (lua_getfield(L, idx, field) != LUA_TNIL) {
    int ok;
    v = lua_tointegerx(L, -1, &ok);
    if (!ok || v < lo || v > hi) luaL_error(L, "tree: add: fields.%s must be an integer in %I..%I", field, lo, hi);
  }
  lua_pop(L, 1);
  return v;
}

static void split_seconds(double s, int64_t *sec, uint32_t *nsec) {
  double whole = floor(s);
  double frac = round((s - whole) * 1e9);
  if (frac >= 1e9) {
    whole += 1;
    frac = 0;
  }
  *sec = (int64_t)whole;
  *nsec = (uint32_t)frac;
}

static void read_fields(lua_State *L, tree_fields *f, unsigned char *sha) {
  if (!lua_istable(L, 3)) luaL_error(L, "tree: add: fields must be a table, got %s", luaL_typename(L, 3));
  memset(f, 0, sizeof *f);
  lua_getfield(L, 3, "kind");
  const char *kind = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
  for (int k = 0; kind && KIND_WORDS[k]; k++)
    if (strcmp(kind, KIND_WORDS[k]) == 0) f->kind = k + 1;
  if (f->kind == 0)
    luaL_error(L, "tree: add: fields.kind must be \"file\", \"dir\", \"symlink\" or \"other\", got %s",
               kind ? kind : luaL_typename(L, -1));
  lua_pop(L, 1);
  f->mode = (unsigned)opt_int(L, 3, "mode", 0, 07777);
  f->size = (uint64_t)opt_int(L, 3, "size", 0, LUA_MAXINTEGER);
  f->ino = (uint64_t)opt_int(L, 3, "ino", 0, LUA_MAXINTEGER);
  f->dev = (uint64_t)opt_int(L, 3, "dev", 0, LUA_MAXINTEGER);
  f->flags = (unsigned)opt_int(L, 3, "flags", 0, 255);
  int has_ns = lua_getfield(L, 3, "mtime_ns") != LUA_TNIL, has_s = lua_getfield(L, 3, "mtime") != LUA_TNIL;
  if (has_ns) {
    if (!lua_isinteger(L, -2)) luaL_error(L, "tree: add: fields.mtime_ns must be an integer");
    lua_Integer ns = lua_tointeger(L, -2);
    lua_Integer sec = ns / TREE_NSEC, rem = ns % TREE_NSEC;
    if (rem < 0) {
      rem += TREE_NSEC;
      sec--;
    }
    f->mtime_sec = sec;
    f->nsec = (uint32_t)rem;
  } else if (has_s) {
    if (!lua_isnumber(L, -1) || !isfinite(lua_tonumber(L, -1)) || fabs(lua_tonumber(L, -1)) > 9e15)
      luaL_error(L, "tree: add: fields.mtime must be a number of seconds");
    split_seconds(lua_tonumber(L, -1), &f->mtime_sec, &f->nsec);
  }
  lua_pop(L, 2);
  if (lua_getfield(L, 3, "sha256") != LUA_TNIL) {
    size_t len;
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
    if (s == NULL || parse_hex(s, len, sha) < 0) luaL_error(L, "tree: add: fields.sha256 must be 64 hex digits");
    f->sha = sha;
  }
  lua_pop(L, 1);
  if (lua_getfield(L, 3, "target") != LUA_TNIL) {
    if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "tree: add: fields.target must be a string");
    if (f->kind != TREE_SYMLINK) luaL_error(L, "tree: add: fields.target is only for a symlink");
    f->link = lua_tolstring(L, -1, &f->link_len); /* anchored by the fields table */
    if (f->link_len > TREE_MAX_LINK) luaL_error(L, "tree: add: fields.target is longer than 32767 bytes");
  }
  lua_pop(L, 1);
}

static int l_add(lua_State *L) {
  ferry_tree *t = luaL_checkudata(L, 1, TREE_MT);
  size_t len;
  const char *rel = check_rel(L, 2, "tree: add", &len);
  tree_fields f;
  unsigned char sha[32];
  read_fields(L, &f, sha);
  const char *why;
  if (ferry_tree_append(t, rel, len, &f, &why) < 0) return luaL_error(L, "tree: %s", why);
  return 0;
}

static ferry_tree *self(lua_State *L) { return ferry_tree_check(L, 1, "tree", "self"); }

static void push_sha(lua_State *L, const tree_entry *x) {
  if (!x->has_sha) {
    lua_pushnil(L);
    return;
  }
  char hex[65];
  ferry_hex(x->sha, 32, hex);
  lua_pushlstring(L, hex, 64);
}

void ferry_tree_push_name(lua_State *L, const ferry_tree *t, const tree_entry *x) {
  unsigned dots, slashes;
  ferry_tree_name_counts(t, x, &dots, &slashes);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (unsigned i = 0; i < dots; i++) luaL_addlstring(&b, "./", 2);
  luaL_addlstring(&b, tree_path(t, x), x->path_len);
  for (unsigned i = 0; i < slashes; i++) luaL_addchar(&b, '/');
  luaL_pushresult(&b);
}

enum { F_KIND, F_MODE, F_SIZE, F_MTIME, F_MTIME_NS, F_INO, F_DEV, F_SHA, F_TARGET, F_FLAGS, F_IMPLIED, F_NAME };
static const char *const FIELD_NAMES[] = {"kind", "mode", "size", "mtime", "mtime_ns", "ino", "dev",
                                          "sha256", "target", "flags", "implied", "name", NULL};

static void push_field(lua_State *L, const ferry_tree *t, const tree_entry *x, int field) {
  switch (field) {
  case F_KIND: lua_pushstring(L, ferry_tree_kind_name(x->kind)); break;
  case F_MODE: lua_pushinteger(L, x->mode); break;
  case F_SIZE: lua_pushinteger(L, (lua_Integer)x->size); break;
  case F_MTIME: lua_pushnumber(L, (lua_Number)x->mtime_sec + (lua_Number)x->nsec / 1e9); break;
  case F_MTIME_NS: lua_pushinteger(L, (lua_Integer)((uint64_t)x->mtime_sec * TREE_NSEC + x->nsec)); break;
  case F_INO: lua_pushinteger(L, (lua_Integer)x->ino); break;
  case F_DEV: lua_pushinteger(L, (lua_Integer)ferry_tree_dev(t, x)); break;
  case F_SHA: push_sha(L, x); break;
  case F_TARGET:
    if (x->kind == TREE_SYMLINK) lua_pushlstring(L, tree_link(t, x), x->link_len);
    else lua_pushnil(L);
    break;
  case F_FLAGS: lua_pushinteger(L, x->flags); break;
  case F_IMPLIED: lua_pushboolean(L, x->implied); break;
  default: ferry_tree_push_name(L, t, x); break;
  }
}

static int l_get(lua_State *L) {
  ferry_tree *t = self(L);
  size_t len;
  const char *rel = ferry_check_string(L, 2, "tree: get", "rel", &len);
  ptrdiff_t i = ferry_tree_find(t, rel, len);
  if (i < 0) {
    lua_pushnil(L);
    return 1;
  }
  const tree_entry *x = &t->e[i];
  lua_createtable(L, 0, 12);
  for (int f = F_KIND; f <= F_NAME; f++) {
    if ((f == F_SHA && !x->has_sha) || (f == F_TARGET && x->kind != TREE_SYMLINK) || (f == F_IMPLIED && !x->implied) ||
        (f == F_NAME && !x->named))
      continue;
    push_field(L, t, x, f);
    lua_setfield(L, -2, FIELD_NAMES[f]);
  }
  return 1;
}

static int l_count(lua_State *L) {
  ferry_tree *t = self(L);
  lua_pushinteger(L, (lua_Integer)(t->n - t->dead));
  return 1;
}

static int l_bytes(lua_State *L) {
  ferry_tree *t = luaL_checkudata(L, 1, TREE_MT);
  lua_pushinteger(L, (lua_Integer)(sizeof *t + t->ebytes + t->acap));
  return 1;
}

/* The iterator: upvalues tree, next index, generation, field codes (a string of bytes), kinds (a bit set). */
static int iter_next(lua_State *L) {
  ferry_tree *t = lua_touserdata(L, lua_upvalueindex(1));
  lua_Integer i = lua_tointeger(L, lua_upvalueindex(2));
  if (!t->sorted || (unsigned long)lua_tointeger(L, lua_upvalueindex(3)) != t->gen)
    return luaL_error(L, "tree: iter: the tree changed order during the iteration (an add out of order)");
  unsigned kinds = (unsigned)lua_tointeger(L, lua_upvalueindex(5));
  while ((size_t)i < t->n && (t->e[i].dead || !(kinds & 1u << t->e[i].kind))) i++;
  if ((size_t)i >= t->n) {
    lua_pushinteger(L, i);
    lua_replace(L, lua_upvalueindex(2));
    return 0;
  }
  const tree_entry *x = &t->e[i];
  lua_pushinteger(L, i + 1);
  lua_replace(L, lua_upvalueindex(2));
  size_t nf;
  const char *codes = lua_tolstring(L, lua_upvalueindex(4), &nf);
  luaL_checkstack(L, (int)nf + 1, "tree: iter");
  lua_pushlstring(L, tree_path(t, x), x->path_len);
  for (size_t k = 0; k < nf; k++) push_field(L, t, x, codes[k]);
  return (int)nf + 1;
}

static int l_iter(lua_State *L) {
  ferry_tree *t = self(L);
  size_t start = 0;
  if (!lua_isnoneornil(L, 2)) {
    size_t len;
    const char *from = ferry_check_string(L, 2, "tree: iter", "from", &len);
    start = ferry_tree_lower(t, from, len);
  }
  const char *spec = lua_isnoneornil(L, 3) ? DEFAULT_FIELDS : ferry_check_string(L, 3, "tree: iter", "fields", NULL);
  char codes[32];
  size_t nf = 0;
  for (const char *p = spec; *p;) {
    size_t w = strcspn(p, " ,");
    if (w > 0) {
      int f = 0;
      while (FIELD_NAMES[f] && (strlen(FIELD_NAMES[f]) != w || memcmp(FIELD_NAMES[f], p, w) != 0)) f++;
      if (FIELD_NAMES[f] == NULL) luaL_error(L, "tree: iter: unknown field '%s'", lua_pushlstring(L, p, w));
      if (nf == sizeof codes) luaL_error(L, "tree: iter: too many fields");
      codes[nf++] = (char)f;
    }
    p += w;
    if (*p) p++;
  }
  unsigned kinds = 0;
  if (lua_isnoneornil(L, 4)) {
    kinds = ~0u;
  } else {
    for (const char *p = ferry_check_string(L, 4, "tree: iter", "kinds", NULL); *p;) {
      size_t w = strcspn(p, " ,");
      int k = 0;
      while (w > 0 && KIND_WORDS[k] && (strlen(KIND_WORDS[k]) != w || memcmp(KIND_WORDS[k], p, w) != 0)) k++;
      if (w > 0 && KIND_WORDS[k] == NULL) luaL_error(L, "tree: iter: unknown kind '%s'", lua_pushlstring(L, p, w));
      if (w > 0) kinds |= 1u << (k + 1);
      p += w;
      if (*p) p++;
    }
  }
  lua_settop(L, 1);
  lua_pushinteger(L, (lua_Integer)start);
  lua_pushinteger(L, (lua_Integer)t->gen);
  lua_pushlstring(L, codes, nf);
  lua_pushinteger(L, (lua_Integer)kinds);
  lua_pushcclosure(L, iter_next, 5);
  return 1;
}

static int no_entry(lua_State *L, const char *rel) { return ferry_fail(L, "ENOENT", "tree: no entry '%s'", rel); }

static int l_set_sha256(lua_State *L) {
  ferry_tree *t = self(L);
  size_t len, hlen;
  const char *rel = ferry_check_string(L, 2, "tree: set_sha256", "rel", &len);
  unsigned char md[32];
  int clear = lua_isnoneornil(L, 3);
  const char *hex = clear ? NULL : lua_tolstring(L, 3, &hlen);
  if (!clear && (lua_type(L, 3) != LUA_TSTRING || parse_hex(hex, hlen, md) < 0))
    return luaL_error(L, "tree: set_sha256: sha256 must be 64 hex digits or nil");
  ptrdiff_t i = ferry_tree_find(t, rel, len);
  if (i < 0) return no_entry(L, rel);
  if (t->e[i].kind != TREE_FILE)
    return ferry_fail(L, "EINVAL", "tree: '%s' is a %s, not a file", rel, ferry_tree_kind_name(t->e[i].kind));
  ferry_tree_record_sha(t, (size_t)i, clear ? NULL : md, t->e[i].size);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_set_flags(lua_State *L) {
  ferry_tree *t = self(L);
  size_t len;
  const char *rel = ferry_check_string(L, 2, "tree: set_flags", "rel", &len);
  int ok;
  lua_Integer flags = lua_tointegerx(L, 3, &ok);
  if (!ok || flags < 0 || flags > 255) return luaL_error(L, "tree: set_flags: flags must be an integer in 0..255");
  ptrdiff_t i = ferry_tree_find(t, rel, len);
  if (i < 0) return no_entry(L, rel);
  lua_pushinteger(L, t->e[i].flags);
  t->e[i].flags = (uint8_t)flags;
  return 1;
}

static int l_remove(lua_State *L) {
  ferry_tree *t = self(L);
  size_t len;
  const char *rel = ferry_check_string(L, 2, "tree: remove", "rel", &len);
  ptrdiff_t i = ferry_tree_find(t, rel, len);
  if (i >= 0) { /* marked, not moved: an iteration in progress goes on */
    t->e[i].dead = 1;
    t->dead++;
  }
  lua_pushboolean(L, i >= 0);
  return 1;
}

static int l_taken_at(lua_State *L) {
  ferry_tree *t = luaL_checkudata(L, 1, TREE_MT);
  if (!lua_isnoneornil(L, 2)) {
    if (!lua_isnumber(L, 2) || !isfinite(lua_tonumber(L, 2)) || fabs(lua_tonumber(L, 2)) > 9e15)
      return luaL_error(L, "tree: taken_at: seconds must be a number");
    split_seconds(lua_tonumber(L, 2), &t->taken_sec, &t->taken_nsec);
    t->has_taken = 1;
  }
  if (t->has_taken) lua_pushnumber(L, (lua_Number)t->taken_sec + (lua_Number)t->taken_nsec / 1e9);
  else lua_pushnil(L);
  return 1;
}

static int l_under(lua_State *L) {
  ferry_tree *t = self(L);
  size_t len;
  const char *rel = ferry_check_string(L, 2, "tree: under", "rel", &len);
  size_t lo = 0, hi = t->n;
  if (len > 0) {
    luaL_Buffer b;
    char *prefix = luaL_buffinitsize(L, &b, len + 1);
    memcpy(prefix, rel, len);
    prefix[len] = '/';
    lo = ferry_tree_lower(t, prefix, len + 1);
    hi = ferry_tree_prefix_end(t, lo, prefix, len + 1);
  }
  size_t count = hi - lo;
  for (size_t i = lo; t->dead > 0 && i < hi; i++) count -= t->e[i].dead; /* removed entries do not count */
  lua_pushinteger(L, (lua_Integer)count);
  return 1;
}

static int l_tostring(lua_State *L) {
  ferry_tree *t = luaL_checkudata(L, 1, TREE_MT);
  lua_pushfstring(L, "tree (%I entries)", (lua_Integer)(t->n - t->dead));
  return 1;
}

static int l_path_less(lua_State *L) {
  size_t an, bn;
  const char *a = ferry_check_string(L, 1, "tree_path_less", "a", &an);
  const char *b = ferry_check_string(L, 2, "tree_path_less", "b", &bn);
  lua_pushboolean(L, ferry_tree_cmp(a, an, b, bn) < 0);
  return 1;
}

void ferry_open_tree(lua_State *L) {
  ferry_tree_open_scratch(L);
  static const luaL_Reg methods[] = {
      {"add", l_add},           {"get", l_get},           {"count", l_count},       {"bytes", l_bytes},
      {"iter", l_iter},         {"set_sha256", l_set_sha256}, {"set_flags", l_set_flags}, {"remove", l_remove},
      {"taken_at", l_taken_at}, {"under", l_under},       {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__gc", l_tree_gc}, {"__len", l_count}, {"__tostring", l_tostring}, {NULL, NULL}};
  ferry_new_class(L, TREE_MT, meta, methods);
  lua_pushcfunction(L, l_tree_new);
  lua_setfield(L, -2, "tree_new");
  lua_pushcfunction(L, l_path_less);
  lua_setfield(L, -2, "tree_path_less");
  ferry_tree_open_diff(L);
  ferry_tree_open_edit(L);
}

