/* Where trees differ: a merge-join of two or three trees in path order, so ferry.merge and ferry.delta plan
 * over the differences instead of over every entry.
 *
 * core.tree_diff(a, b[, c][, opts]) -> paths, sides
 *   paths: the paths (in path order) where b, or c, differs from a; sides: for each path a bit set, 1 when b
 *   differs from a there, 2 when c does. A path present on one side only differs.
 *   opts.mode_mask: the mode bits compared (default 07777); opts.compare: "content" (default) compares a
 *   file's size and sha256 (an unknown digest differs from a known one; two unknown ones leave the size to
 *   decide), "stat" compares a file's size, mtime and inode instead (the quick check), "size" its size alone
 *   (does a listing show the tree?). Besides: the kind, the mode of files, dirs and others, the target of
 *   symlinks (never their mode).
 */
#include <string.h>

#include "tree.h"

enum { CONTENT, STAT, SIZE };
static const char *const COMPARE[] = {"content", "stat", "size", NULL};

typedef struct diff_opts {
  unsigned mask;
  int compare;
} diff_opts;

static int same(const ferry_tree *ta, const tree_entry *a, const ferry_tree *tb, const tree_entry *b,
                const diff_opts *o) {
  if (a == NULL || b == NULL) return a == b;
  if (a->kind != b->kind) return 0;
  if (a->kind == TREE_SYMLINK)
    return a->link_len == b->link_len && memcmp(tree_link(ta, a), tree_link(tb, b), a->link_len) == 0;
  if ((a->mode & o->mask) != (b->mode & o->mask)) return 0;
  if (a->kind != TREE_FILE) return 1;
  if (a->size != b->size) return 0;
  if (o->compare == SIZE) return 1;
  if (o->compare == STAT) return a->mtime_sec == b->mtime_sec && a->nsec == b->nsec && a->ino == b->ino;
  if (a->has_sha != b->has_sha) return 0;
  return !a->has_sha || memcmp(a->sha, b->sha, sizeof a->sha) == 0;
}

static void read_opts(lua_State *L, int idx, diff_opts *o) {
  o->mask = 07777;
  o->compare = CONTENT;
  if (lua_isnoneornil(L, idx)) return;
  if (!lua_istable(L, idx)) luaL_error(L, "tree_diff: opts must be a table, got %s", luaL_typename(L, idx));
  if (lua_getfield(L, idx, "mode_mask") != LUA_TNIL) {
    int ok;
    lua_Integer m = lua_tointegerx(L, -1, &ok);
    if (!ok || m < 0 || m > 07777) luaL_error(L, "tree_diff: opts.mode_mask must be an integer in 0..07777");
    o->mask = (unsigned)m;
  }
  if (lua_getfield(L, idx, "compare") != LUA_TNIL) {
    const char *c = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
    o->compare = -1;
    for (int k = 0; COMPARE[k]; k++)
      if (strcmp(c, COMPARE[k]) == 0) o->compare = k;
    if (o->compare < 0) luaL_error(L, "tree_diff: opts.compare must be \"content\", \"stat\" or \"size\"");
  }
  lua_pop(L, 2);
}

/* The next live entry at or after *i, or NULL. */
static const tree_entry *head(const ferry_tree *t, size_t *i) {
  while (*i < t->n && t->e[*i].dead) (*i)++;
  return *i < t->n ? &t->e[*i] : NULL;
}

static int l_tree_diff(lua_State *L) {
  const ferry_tree *t[3];
  t[0] = ferry_tree_check(L, 1, "tree_diff", "a");
  t[1] = ferry_tree_check(L, 2, "tree_diff", "b");
  int sides = 2, opts = 3;
  if (luaL_testudata(L, 3, TREE_MT)) {
    t[2] = ferry_tree_check(L, 3, "tree_diff", "c");
    sides = 3;
    opts = 4;
  }
  diff_opts o;
  read_opts(L, opts, &o);
  lua_settop(L, opts);
  lua_newtable(L); /* paths */
  lua_newtable(L); /* sides */
  int paths_idx = opts + 1, sides_idx = opts + 2;
  size_t pos[3] = {0, 0, 0};
  lua_Integer out = 0;
  for (;;) {
    const tree_entry *h[3] = {NULL, NULL, NULL}, *min = NULL;
    int mt = 0;
    for (int s = 0; s < sides; s++) {
      h[s] = head(t[s], &pos[s]);
      if (h[s] && (min == NULL || ferry_tree_cmp(tree_path(t[s], h[s]), h[s]->path_len, tree_path(t[mt], min),
                                                 min->path_len) < 0)) {
        min = h[s];
        mt = s;
      }
    }
    if (min == NULL) break;
    const char *mp = tree_path(t[mt], min);
    size_t ml = min->path_len;
    const tree_entry *at[3] = {NULL, NULL, NULL};
    for (int s = 0; s < sides; s++) {
      if (h[s] && h[s]->path_len == ml && memcmp(tree_path(t[s], h[s]), mp, ml) == 0) {
        at[s] = h[s];
        pos[s]++;
      }
    }
    int bits = 0;
    for (int s = 1; s < sides; s++)
      if (!same(t[0], at[0], t[s], at[s], &o)) bits |= 1 << (s - 1);
    if (bits) {
      out++;
      lua_pushlstring(L, mp, ml);
      lua_rawseti(L, paths_idx, out);
      lua_pushinteger(L, bits);
      lua_rawseti(L, sides_idx, out);
    }
  }
  return 2;
}

void ferry_tree_open_diff(lua_State *L) {
  lua_pushcfunction(L, l_tree_diff);
  lua_setfield(L, -2, "tree_diff");
}
