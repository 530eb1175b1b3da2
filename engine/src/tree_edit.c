/* Editing and reading a tree by subtree, for the delta and the merge that look only at what changed.
 *
 * t:copy() -> a new tree with the same entries and taken_at
 * t:prune(rel) -> the number of entries removed: rel and everything below it
 * t:children(rel) -> the paths directly below rel ("" for the top level), in path order
 * t:orphan() -> the first path whose parent is not a directory entry of the tree, or nil when every entry's is
 * t:stat_from(src) -> n: for each file, dir or symlink of t that src holds alike (the same kind, mode & 0777, and
 *   for a file the same size and a known, equal sha256; for a symlink the same target), src's mode, mtime,
 *   inode and device replace t's; every other entry of t gets mtime 0 and inode 0 (nothing a later walk could
 *   match: tree_walk's known re-reads it). t's taken_at becomes src's. n counts the entries that took src's.
 */
#include <stdlib.h>
#include <string.h>

#include "tree.h"

static ferry_tree *self(lua_State *L, const char *fn) { return ferry_tree_check(L, 1, fn, "self"); }

static int l_copy(lua_State *L) {
  ferry_tree *t = self(L, "tree: copy");
  ferry_tree *c = ferry_tree_push(L);
  c->taken_sec = t->taken_sec;
  c->taken_nsec = t->taken_nsec;
  c->has_taken = t->has_taken;
  if (t->n - t->dead == 0) return 1;
  if (ferry_tree_reserve(c, t->n - t->dead) < 0) return luaL_error(L, "tree: copy: out of memory");
  for (size_t i = 0; i < t->n; i++) {
    const tree_entry *x = &t->e[i];
    if (x->dead) continue;
    unsigned dots, slashes;
    ferry_tree_name_counts(t, x, &dots, &slashes);
    tree_fields f = {.kind = x->kind, .mode = x->mode, .size = x->size, .ino = x->ino,
                     .dev = ferry_tree_dev(t, x), .mtime_sec = x->mtime_sec, .nsec = x->nsec,
                     .sha = x->has_sha ? x->sha : NULL, .link = tree_link(t, x), .link_len = x->link_len,
                     .dots = dots, .slashes = slashes, .flags = x->flags, .implied = x->implied};
    const char *why;
    if (ferry_tree_append(c, tree_path(t, x), x->path_len, &f, &why) < 0) return luaL_error(L, "tree: copy: %s", why);
  }
  ferry_tree_trim(c);
  return 1;
}

/* The range [*lo, *hi) of the entries strictly below rel (len bytes; the whole tree for ""). */
static void below(const ferry_tree *t, const char *rel, size_t len, size_t *lo, size_t *hi) {
  if (len == 0) {
    *lo = 0;
    *hi = t->n;
    return;
  }
  /* '/' sorts before every other byte: rel's subtree is the run right after rel's own place */
  *lo = ferry_tree_lower(t, rel, len);
  if (*lo < t->n && t->e[*lo].path_len == len && memcmp(tree_path(t, &t->e[*lo]), rel, len) == 0) (*lo)++;
  *hi = ferry_tree_subtree_end(t, *lo, rel, len);
}

static int l_prune(lua_State *L) {
  ferry_tree *t = self(L, "tree: prune");
  size_t len;
  const char *rel = ferry_check_string(L, 2, "tree: prune", "rel", &len);
  if (len == 0) return luaL_error(L, "tree: prune: rel must not be empty");
  lua_Integer removed = 0;
  ptrdiff_t at = ferry_tree_find(t, rel, len);
  if (at >= 0) {
    t->e[at].dead = 1;
    t->dead++;
    removed++;
  }
  size_t lo, hi;
  below(t, rel, len, &lo, &hi);
  for (size_t i = lo; i < hi; i++) { /* marked, not moved: an iteration in progress goes on */
    if (t->e[i].dead) continue;
    t->e[i].dead = 1;
    t->dead++;
    removed++;
  }
  lua_pushinteger(L, removed);
  return 1;
}

static int l_children(lua_State *L) {
  ferry_tree *t = self(L, "tree: children");
  size_t len;
  const char *rel = ferry_check_string(L, 2, "tree: children", "rel", &len);
  size_t lo, hi;
  below(t, rel, len, &lo, &hi);
  size_t skip = len ? len + 1 : 0; /* the bytes of "rel/" */
  lua_newtable(L);
  lua_Integer n = 0;
  for (size_t i = lo; i < hi;) {
    const tree_entry *x = &t->e[i];
    const char *p = tree_path(t, x);
    if (memchr(p + skip, '/', x->path_len - skip) != NULL) { /* a deeper entry whose parent is not listed */
      i++;
      continue;
    }
    if (!x->dead) {
      lua_pushlstring(L, p, x->path_len);
      lua_rawseti(L, -2, ++n);
    }
    i = ferry_tree_subtree_end(t, i + 1, p, x->path_len); /* the next sibling: past this entry's subtree */
  }
  return 1;
}

static int l_orphan(lua_State *L) {
  ferry_tree *t = self(L, "tree: orphan");
  /* path order puts each directory before its subtree: a stack of the directories above holds the parents */
  size_t *stack = NULL, depth = 0, cap = 0;
  void **box = ferry_tree_scratch(L);
  for (size_t i = 0; i < t->n; i++) {
    const tree_entry *x = &t->e[i];
    if (x->dead) continue;
    const char *p = tree_path(t, x);
    const char *slash = memrchr(p, '/', x->path_len);
    size_t plen = slash ? (size_t)(slash - p) : 0; /* the parent's length, 0 at the top */
    while (depth > 0) {
      const tree_entry *d = &t->e[stack[depth - 1]];
      if (d->path_len < x->path_len && p[d->path_len] == '/' && memcmp(tree_path(t, d), p, d->path_len) == 0) break;
      depth--;
    }
    if (plen > 0 && (depth == 0 || t->e[stack[depth - 1]].path_len != plen)) {
      lua_pushlstring(L, p, x->path_len);
      return 1;
    }
    if (x->kind == TREE_DIR) {
      if (depth == cap) {
        size_t c = cap ? cap * 2 : 32;
        size_t *q = realloc(stack, c * sizeof *q);
        if (q == NULL) return luaL_error(L, "tree: orphan: out of memory");
        *box = stack = q;
        cap = c;
      }
      stack[depth++] = i;
    }
  }
  lua_pushnil(L);
  return 1;
}

static int alike(const ferry_tree *ta, const tree_entry *a, const ferry_tree *tb, const tree_entry *b) {
  if (a->kind != b->kind || (a->mode & 0777) != (b->mode & 0777)) return 0;
  if (a->kind == TREE_SYMLINK)
    return a->link_len == b->link_len && memcmp(tree_link(ta, a), tree_link(tb, b), a->link_len) == 0;
  if (a->kind == TREE_FILE)
    return a->size == b->size && a->has_sha && b->has_sha && memcmp(a->sha, b->sha, sizeof a->sha) == 0;
  return a->kind == TREE_DIR;
}

static int l_stat_from(lua_State *L) {
  ferry_tree *t = self(L, "tree: stat_from");
  const ferry_tree *src = ferry_tree_check(L, 2, "tree: stat_from", "src");
  lua_Integer kept = 0;
  size_t j = 0;
  for (size_t i = 0; i < t->n; i++) { /* both in path order: one merge-join */
    tree_entry *x = &t->e[i];
    if (x->dead) continue;
    const char *p = tree_path(t, x);
    while (j < src->n && (src->e[j].dead || ferry_tree_cmp(tree_path(src, &src->e[j]), src->e[j].path_len, p,
                                                            x->path_len) < 0))
      j++;
    const tree_entry *y = j < src->n ? &src->e[j] : NULL;
    int same_path = y && y->path_len == x->path_len && memcmp(tree_path(src, y), p, x->path_len) == 0;
    if (same_path && alike(t, x, src, y)) {
      unsigned dev;
      if (ferry_tree_dev_index(t, ferry_tree_dev(src, y), &dev) < 0)
        return luaL_error(L, "tree: stat_from: more than 255 devices");
      x->mode = y->mode;
      x->mtime_sec = y->mtime_sec;
      x->nsec = y->nsec;
      x->ino = y->ino;
      x->dev = (uint8_t)dev;
      kept++;
    } else {
      x->mtime_sec = 0;
      x->nsec = 0;
      x->ino = 0;
    }
  }
  t->taken_sec = src->taken_sec;
  t->taken_nsec = src->taken_nsec;
  t->has_taken = src->has_taken;
  lua_pushinteger(L, kept);
  return 1;
}

void ferry_tree_open_edit(lua_State *L) {
  static const luaL_Reg methods[] = {{"copy", l_copy},     {"prune", l_prune},         {"children", l_children},
                                     {"orphan", l_orphan}, {"stat_from", l_stat_from}, {NULL, NULL}};
  ferry_tree_add_methods(L, methods);
}
