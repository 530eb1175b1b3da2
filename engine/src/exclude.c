/* Exclude patterns matched in C, so that a walk of 100,000 entries does not call into Lua for each one.
 * ferry.excludes parses and checks the patterns (and words their errors) and hands over the rules; this is
 * the matching of README "Exclude patterns".
 *
 * core.exclude_matcher(rules) -> matcher
 *   rules: a list of {include = bool, dir_only = bool, bare = bool, comps = {component...}}: a component in
 *   the pattern syntax ('*' any run of bytes but '/', '?' one byte but '/', '\c' the byte c) or "**" (any
 *   number of whole components; consecutive ones mean one). A bare rule has one component, matched against
 *   the last component of a path; the others match the whole path from the root, and a trailing "**" spans
 *   at least one component. Misuse raises "exclude_matcher: <what>".
 * matcher(rel[, is_dir]) -> true when rel is excluded: the last rule that matches it is not an include, or a
 *   directory above rel is excluded (a trailing '/' on rel means a directory). Evaluated as a list: a rule
 *   is only tried when it could change the verdict.
 *
 * tree_walk.c and tree_tar.c take a matcher as opts.exclude and ask it here, without Lua.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define EXCLUDE_MT "ferry.exclude"
#define STAR 256
#define ANY 257
#define MAX_RULES 65536
#define MAX_COMPS 4096 /* of one rule */

typedef struct span {
  const char *p;
  size_t n;
} span;

typedef struct comp {
  uint16_t *tok; /* bytes 0..255, STAR, ANY */
  size_t n;
  int globstar, literal;
} comp;

typedef struct rule {
  int include, dir_only, bare;
  comp *comps;
  size_t ncomps;
} rule;

struct ferry_exclude {
  rule *rules;
  size_t nrules;
  span *parts; /* the components of the path being decided */
  size_t parts_cap;
  char *last_dir; /* the last directory whose verdict (ancestors included) was worked out */
  size_t last_len, last_cap;
  int last_verdict, has_last;
};

static void matcher_free(ferry_exclude *m) {
  for (size_t i = 0; i < m->nrules; i++) {
    for (size_t k = 0; k < m->rules[i].ncomps; k++) free(m->rules[i].comps[k].tok);
    free(m->rules[i].comps);
  }
  free(m->rules);
  free(m->parts);
  free(m->last_dir);
  memset(m, 0, sizeof *m);
}

static int l_gc(lua_State *L) {
  matcher_free(luaL_checkudata(L, 1, EXCLUDE_MT));
  return 0;
}

/* ---- matching ---- */

static int token_matches(uint16_t t, unsigned char c) { return t == ANY || t == c; }

/* Does the component s[0..n) match c's tokens? The wildcard walk returns only to the last '*' seen, so it
 * takes O(tokens * n) steps. */
static int glob(const comp *c, const char *s, size_t n) {
  const uint16_t *tok = c->tok;
  size_t m = c->n;
  if (c->literal) {
    if (m != n) return 0;
    for (size_t i = 0; i < n; i++)
      if (tok[i] != (unsigned char)s[i]) return 0;
    return 1;
  }
  size_t pi = 0, si = 0, star_pi = (size_t)-1, star_si = 0;
  while (si < n) {
    if (pi < m && tok[pi] == STAR) {
      star_pi = pi++;
      star_si = si;
    } else if (pi < m && token_matches(tok[pi], (unsigned char)s[si])) {
      pi++;
      si++;
    } else if (star_pi != (size_t)-1) {
      pi = star_pi + 1;
      si = ++star_si;
    } else {
      return 0;
    }
  }
  while (pi < m && tok[pi] == STAR) pi++;
  return pi == m;
}

/* The same walk over whole components: a globstar item takes any run of path components. */
static int sequence(const rule *r, const span *parts, size_t n) {
  size_t m = r->ncomps, pi = 0, si = 0, star_pi = (size_t)-1, star_si = 0;
  while (si < n) {
    if (pi < m && r->comps[pi].globstar) {
      star_pi = pi++;
      star_si = si;
    } else if (pi < m && glob(&r->comps[pi], parts[si].p, parts[si].n)) {
      pi++;
      si++;
    } else if (star_pi != (size_t)-1) {
      pi = star_pi + 1;
      si = ++star_si;
    } else {
      return 0;
    }
  }
  while (pi < m && r->comps[pi].globstar) pi++;
  return pi == m;
}

/* path[0..len)'s components into m->parts; their number, or -1 when out of memory. */
static ptrdiff_t split(ferry_exclude *m, const char *path, size_t len) {
  size_t n = 0;
  for (size_t a = 0; a < len;) {
    size_t b = a;
    while (b < len && path[b] != '/') b++;
    if (n == m->parts_cap) {
      size_t cap = m->parts_cap ? m->parts_cap * 2 : 32;
      span *p = realloc(m->parts, cap * sizeof *p);
      if (p == NULL) return -1;
      m->parts = p;
      m->parts_cap = cap;
    }
    m->parts[n++] = (span){path + a, b - a};
    a = b + 1;
  }
  return (ptrdiff_t)n;
}

/* The verdict of the rules on path[0..len) itself (its ancestors not looked at); -1 when out of memory. */
static int decide(ferry_exclude *m, const char *path, size_t len, int is_dir) {
  const char *base = path + len;
  while (base > path && base[-1] != '/') base--;
  size_t blen = (size_t)(path + len - base);
  ptrdiff_t nparts = -2;
  int excluded = 0;
  for (size_t i = 0; i < m->nrules; i++) {
    const rule *r = &m->rules[i];
    if (excluded != r->include) continue; /* it could not change the verdict */
    if (r->dir_only && !is_dir) continue;
    int hit;
    if (r->bare) {
      hit = glob(&r->comps[0], base, blen);
    } else {
      if (nparts == -2 && (nparts = split(m, path, len)) < 0) return -1;
      hit = sequence(r, m->parts, (size_t)nparts);
    }
    if (hit) excluded = !r->include;
  }
  return excluded;
}

int ferry_exclude_decide(ferry_exclude *m, const char *rel, size_t len, int is_dir) {
  return decide(m, rel, len, is_dir);
}

/* Is the directory path[0..len) excluded, itself or by a directory above it? The last answer is kept: a
 * walk or an archive asks about one directory's entries in a row. */
static int dir_excluded(ferry_exclude *m, const char *path, size_t len) {
  if (m->has_last && m->last_len == len && memcmp(m->last_dir, path, len) == 0) return m->last_verdict;
  int verdict = 0;
  for (size_t i = 0; i <= len && !verdict; i++)
    if (i == len || path[i] == '/') verdict = decide(m, path, i, 1);
  if (verdict < 0) return verdict;
  if (len + 1 > m->last_cap) {
    size_t cap = m->last_cap ? m->last_cap : 256;
    while (cap < len + 1) cap *= 2;
    char *p = realloc(m->last_dir, cap);
    if (p == NULL) return verdict;
    m->last_dir = p;
    m->last_cap = cap;
  }
  memcpy(m->last_dir, path, len);
  m->last_len = len;
  m->last_verdict = verdict;
  m->has_last = 1;
  return verdict;
}

int ferry_exclude_match(ferry_exclude *m, const char *rel, size_t len, int is_dir) {
  while (len > 0 && rel[len - 1] == '/') {
    len--;
    is_dir = 1;
  }
  if (len == 0) return 0;
  if (is_dir) return dir_excluded(m, rel, len);
  size_t slash = len;
  while (slash > 0 && rel[slash - 1] != '/') slash--;
  int above = slash > 0 ? dir_excluded(m, rel, slash - 1) : 0;
  return above ? above : decide(m, rel, len, 0);
}

ferry_exclude *ferry_exclude_test(lua_State *L, int idx) { return luaL_testudata(L, idx, EXCLUDE_MT); }

static int l_call(lua_State *L) {
  ferry_exclude *m = luaL_checkudata(L, 1, EXCLUDE_MT);
  size_t len;
  const char *rel = ferry_check_string(L, 2, "exclude matcher", "rel", &len);
  int verdict = ferry_exclude_match(m, rel, len, lua_toboolean(L, 3));
  if (verdict < 0) return luaL_error(L, "exclude matcher: out of memory");
  lua_pushboolean(L, verdict);
  return 1;
}

static int l_tostring(lua_State *L) {
  ferry_exclude *m = luaL_checkudata(L, 1, EXCLUDE_MT);
  lua_pushfstring(L, "exclude matcher (%I rules)", (lua_Integer)m->nrules);
  return 1;
}

/* ---- building ---- */

/* A component in the pattern syntax into c (malloc'd tokens). */
static int parse_comp(const char *s, size_t len, comp *c) {
  if (len == 2 && s[0] == '*' && s[1] == '*') {
    c->globstar = 1;
    return 0;
  }
  c->tok = malloc((len ? len : 1) * sizeof *c->tok);
  if (c->tok == NULL) return -1;
  c->literal = 1;
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch == '\\' && i + 1 < len) {
      c->tok[c->n++] = (unsigned char)s[++i];
    } else if (ch == '*' || ch == '?') {
      c->tok[c->n++] = ch == '*' ? STAR : ANY;
      c->literal = 0;
    } else {
      c->tok[c->n++] = ch;
    }
  }
  return 0;
}

static int field_bool(lua_State *L, int idx, const char *key) {
  lua_getfield(L, idx, key);
  int v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

/* Rule i (the table on top) into r. */
static void read_rule(lua_State *L, lua_Integer i, rule *r) {
  r->include = field_bool(L, -1, "include");
  r->dir_only = field_bool(L, -1, "dir_only");
  r->bare = field_bool(L, -1, "bare");
  if (lua_getfield(L, -1, "comps") != LUA_TTABLE) luaL_error(L, "exclude_matcher: rules[%I].comps must be a list", i);
  size_t n = lua_rawlen(L, -1);
  if (n == 0 || n > MAX_COMPS || (r->bare && n != 1))
    luaL_error(L, "exclude_matcher: rules[%I].comps must hold %s", i, r->bare ? "one component" : "1 to 4096 components");
  r->comps = calloc(n + 1, sizeof *r->comps); /* room for the any-component a trailing globstar takes */
  if (r->comps == NULL) luaL_error(L, "exclude_matcher: out of memory");
  for (size_t k = 1; k <= n; k++) {
    if (lua_rawgeti(L, -1, (lua_Integer)k) != LUA_TSTRING)
      luaL_error(L, "exclude_matcher: rules[%I].comps[%I] must be a string", i, (lua_Integer)k);
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    comp c = {0};
    if (parse_comp(s, len, &c) < 0) luaL_error(L, "exclude_matcher: out of memory");
    if (c.globstar && r->bare) {
      free(c.tok);
      luaL_error(L, "exclude_matcher: rules[%I] is bare but its component is \"**\"", i);
    }
    if (c.globstar && r->ncomps > 0 && r->comps[r->ncomps - 1].globstar) {
      lua_pop(L, 1);
      continue; /* consecutive globstars mean one */
    }
    if (c.globstar && k == n) { /* a trailing globstar spans at least one component: "*" then "**" */
      comp any = {0};
      if (parse_comp("*", 1, &any) < 0) luaL_error(L, "exclude_matcher: out of memory");
      r->comps[r->ncomps++] = any;
    }
    r->comps[r->ncomps++] = c;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

static int l_exclude_matcher(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  size_t n = lua_rawlen(L, 1);
  if (n > MAX_RULES) return luaL_error(L, "exclude_matcher: more than %d rules", MAX_RULES);
  ferry_exclude *m = lua_newuserdatauv(L, sizeof *m, 0);
  memset(m, 0, sizeof *m);
  luaL_setmetatable(L, EXCLUDE_MT);
  m->rules = calloc(n ? n : 1, sizeof *m->rules);
  if (m->rules == NULL) return luaL_error(L, "exclude_matcher: out of memory");
  for (size_t i = 1; i <= n; i++) {
    if (lua_rawgeti(L, 1, (lua_Integer)i) != LUA_TTABLE)
      return luaL_error(L, "exclude_matcher: rules[%I] must be a table", (lua_Integer)i);
    m->nrules = i; /* freed by __gc however this ends */
    read_rule(L, (lua_Integer)i, &m->rules[i - 1]);
    lua_pop(L, 1);
  }
  return 1;
}

void ferry_open_exclude(lua_State *L) {
  static const luaL_Reg meta[] = {{"__gc", l_gc}, {"__call", l_call}, {"__tostring", l_tostring}, {NULL, NULL}};
  ferry_new_class(L, EXCLUDE_MT, meta, NULL);
  lua_pushcfunction(L, l_exclude_matcher);
  lua_setfield(L, -2, "exclude_matcher");
}
