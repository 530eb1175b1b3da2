/* The compact tree's storage and order (tree.h): entries appended in any order, settled into path order
 * (sorted in place, duplicates and removed entries dropped), looked up by binary search; the directories a
 * tree implies filled in. Its Lua face is tree_object.c.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "tree.h"

_Static_assert(sizeof(tree_entry) == 72, "a tree entry is 72 bytes");

/* ---- storage ---- */

int ferry_tree_cmp(const char *a, size_t an, const char *b, size_t bn) {
  size_t n = an < bn ? an : bn;
  size_t i = 0;
  while (i + 8 <= n && memcmp(a + i, b + i, 8) == 0) i += 8;
  for (; i < n; i++) {
    unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
    if (x != y) {
      if (x == '/') return -1;
      if (y == '/') return 1;
      return x < y ? -1 : 1;
    }
  }
  return an < bn ? -1 : an > bn;
}

static int grow(void **p, size_t *cap, size_t need, size_t size, size_t first) {
  if (need <= *cap) return 0;
  size_t c = *cap ? *cap : first;
  while (c < need) c += c / 2 + 1;
  void *q = realloc(*p, c * size);
  if (q == NULL) return -1;
  *p = q;
  *cap = c;
  return 0;
}

/* The entries and the arena live in mappings of their own: mremap grows them without a copy and munmap gives
 * them back whole, so a tree costs what it holds however the process's malloc is tuned (the ferry binary
 * keeps everything on its heap). Under AddressSanitizer they stay on the heap, where every access is
 * checked. Returns the new block of at least `want` bytes (its size in *bytes), or NULL with p untouched. */
void *ferry_tree_block(void *p, size_t *bytes, size_t want) {
#ifdef __SANITIZE_ADDRESS__
  void *q = realloc(p, want ? want : 1);
  if (q) *bytes = want;
  return q;
#else
  static size_t page;
  if (page == 0) page = (size_t)sysconf(_SC_PAGESIZE);
  size_t size = (want + page - 1) / page * page;
  if (size == 0) size = page;
  if (p && size == *bytes) return p;
  void *q = p ? mremap(p, *bytes, size, MREMAP_MAYMOVE)
              : mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (q == MAP_FAILED) return NULL;
  *bytes = size;
  return q;
#endif
}

void ferry_tree_block_free(void *p, size_t bytes) {
#ifdef __SANITIZE_ADDRESS__
  (void)bytes;
  free(p);
#else
  if (p) munmap(p, bytes);
#endif
}

/* Room for `need` entries (growing by half) or exactly `need` when exact. 0 or -1. */
static int reserve_entries(ferry_tree *t, size_t need, int exact) {
  if (need <= t->cap && !exact) return 0;
  size_t c = exact ? need : t->cap ? t->cap : 64;
  while (c < need) c += c / 2 + 1; /* + 1: a block trimmed to one entry (exact under ASan) grows too */
  if (c == 0) c = 1;
  tree_entry *q = ferry_tree_block(t->e, &t->ebytes, c * sizeof *t->e);
  if (q == NULL) return need <= t->cap ? 0 : -1;
  t->e = q;
  t->cap = t->ebytes / sizeof *t->e;
  return 0;
}

static int reserve_arena(ferry_tree *t, size_t need, int exact) {
  if (need <= t->acap && !exact) return 0;
  size_t c = exact ? need : t->acap ? t->acap : 4096;
  while (c < need) c += c / 2 + 1;
  char *q = ferry_tree_block(t->arena, &t->acap, c);
  if (q == NULL) return need <= t->acap ? 0 : -1;
  t->arena = q;
  return 0;
}

int ferry_tree_reserve(ferry_tree *t, size_t entries) { return reserve_entries(t, entries, 0); }

int ferry_tree_dev_index(ferry_tree *t, uint64_t dev, unsigned *out) {
  for (unsigned i = t->ndevs; i-- > 0;) {
    if (t->devs[i] == dev) {
      *out = i;
      return 0;
    }
  }
  if (t->ndevs == TREE_MAX_DEVS) return -1;
  t->devs[t->ndevs] = dev;
  *out = t->ndevs++;
  return 0;
}

int ferry_tree_append(ferry_tree *t, const char *path, size_t len, const tree_fields *f, const char **why) {
  *why = "out of memory";
  if (len == 0 || len > TREE_MAX_PATH) {
    *why = "a path longer than 65535 bytes";
    return -1;
  }
  if (f->link_len > TREE_MAX_LINK) {
    *why = "a symlink target longer than 32767 bytes";
    return -1;
  }
  if (f->dots > TREE_MAX_PREFIX || f->slashes > TREE_MAX_PREFIX) {
    *why = "a tar member name with over 255 './' prefixes or trailing '/'";
    return -1;
  }
  unsigned dev = 0;
  if (ferry_tree_dev_index(t, f->dev, &dev) < 0) {
    *why = "more than 255 devices";
    return -1;
  }
  int named = f->dots != 0 || f->slashes != 0;
  size_t extra = len + f->link_len + (named ? 2 : 0);
  if (t->used + extra > UINT32_MAX) {
    *why = "over 4 GiB of paths";
    return -1;
  }
  if (reserve_entries(t, t->n + 1, 0) < 0 || reserve_arena(t, t->used + extra, 0) < 0) return -1;
  tree_entry *x = &t->e[t->n];
  memset(x, 0, sizeof *x);
  x->off = (uint32_t)t->used;
  memcpy(t->arena + t->used, path, len);
  if (f->link_len) memcpy(t->arena + t->used + len, f->link, f->link_len);
  if (named) {
    t->arena[t->used + len + f->link_len] = (char)f->dots;
    t->arena[t->used + len + f->link_len + 1] = (char)f->slashes;
  }
  t->used += extra;
  x->path_len = (uint16_t)len;
  x->link_len = (uint16_t)f->link_len;
  x->named = (uint16_t)named;
  x->kind = (uint16_t)f->kind;
  x->mode = (uint16_t)(f->mode & 07777);
  x->size = f->size;
  x->mtime_sec = f->mtime_sec;
  x->nsec = f->nsec % TREE_NSEC;
  x->ino = f->ino;
  x->dev = (uint8_t)dev;
  x->flags = (uint8_t)f->flags;
  x->implied = f->implied ? 1 : 0;
  if (f->sha) {
    memcpy(x->sha, f->sha, sizeof x->sha);
    x->has_sha = 1;
  }
  if (t->n > 0) {
    const tree_entry *prev = &t->e[t->n - 1];
    if (ferry_tree_cmp(tree_path(t, prev), prev->path_len, path, len) >= 0) t->sorted = 0;
  }
  t->n++;
  return 0;
}

void ferry_tree_name_counts(const ferry_tree *t, const tree_entry *x, unsigned *dots, unsigned *slashes) {
  *dots = *slashes = 0;
  if (!x->named) return;
  const unsigned char *p = (const unsigned char *)tree_link(t, x) + x->link_len;
  *dots = p[0];
  *slashes = p[1];
}

uint64_t ferry_tree_dev(const ferry_tree *t, const tree_entry *x) { return t->devs[x->dev]; }

const char *ferry_tree_kind_name(int kind) {
  static const char *const names[] = {"other", "file", "dir", "symlink", "other"};
  return kind >= 0 && kind <= TREE_OTHER ? names[kind] : "other";
}

void ferry_tree_trim(ferry_tree *t) {
  reserve_entries(t, t->n, 1);
  reserve_arena(t, t->used, 1);
}

/* ---- order ---- */

static int cmp_index(const void *pa, const void *pb, void *ud) {
  const ferry_tree *t = ud;
  uint32_t a = *(const uint32_t *)pa, b = *(const uint32_t *)pb;
  const tree_entry *x = &t->e[a], *y = &t->e[b];
  int c = ferry_tree_cmp(tree_path(t, x), x->path_len, tree_path(t, y), y->path_len);
  return c ? c : (a < b ? -1 : a > b);
}

/* Move e[] into the order idx gives (position j takes old entry idx[j]), in place. */
static void permute(ferry_tree *t, uint32_t *idx) {
  for (size_t j = 0; j < t->n; j++) {
    if (idx[j] == j) continue;
    tree_entry tmp = t->e[j];
    size_t k = j;
    for (;;) {
      size_t src = idx[k];
      idx[k] = (uint32_t)k;
      if (src == j) {
        t->e[k] = tmp;
        break;
      }
      t->e[k] = t->e[src];
      k = src;
    }
  }
}

/* Rewrite the arena with only what live entries use, in entry order. */
static int compact_arena(ferry_tree *t) {
  size_t need = 0;
  for (size_t i = 0; i < t->n; i++) need += t->e[i].path_len + t->e[i].link_len + (t->e[i].named ? 2 : 0);
  size_t bytes = 0;
  char *a = ferry_tree_block(NULL, &bytes, need);
  if (a == NULL) return -1;
  size_t used = 0;
  for (size_t i = 0; i < t->n; i++) {
    tree_entry *x = &t->e[i];
    size_t len = x->path_len + x->link_len + (x->named ? 2 : 0);
    memcpy(a + used, t->arena + x->off, len);
    x->off = (uint32_t)used;
    used += len;
  }
  ferry_tree_block_free(t->arena, t->acap);
  t->arena = a;
  t->used = used;
  t->acap = bytes;
  return 0;
}

int ferry_tree_settle_with(ferry_tree *t, int keep_first, tree_dup_fn on_dup, void *ud) {
  if (t->sorted) return 0; /* removed entries stay, marked, until entries move anyway */
  if (t->n > UINT32_MAX) return -1;
  uint32_t *idx = malloc((t->n ? t->n : 1) * sizeof *idx);
  if (idx == NULL) return -1;
  for (size_t i = 0; i < t->n; i++) idx[i] = (uint32_t)i;
  qsort_r(idx, t->n, sizeof *idx, cmp_index, t);
  permute(t, idx);
  free(idx);
  /* runs of one path are in the order they were added: keep the first or the last of each */
  size_t out = 0, garbage = 0;
  for (size_t i = 0; i < t->n;) {
    size_t j = i + 1;
    while (j < t->n && ferry_tree_cmp(tree_path(t, &t->e[i]), t->e[i].path_len, tree_path(t, &t->e[j]),
                                      t->e[j].path_len) == 0)
      j++;
    size_t keep = keep_first ? i : j - 1;
    for (size_t k = i; k < j; k++) {
      if (k == keep && !t->e[k].dead) continue;
      if (k != keep && on_dup) on_dup(t, &t->e[k], ud);
      garbage += t->e[k].path_len + t->e[k].link_len + (t->e[k].named ? 2 : 0);
    }
    if (!t->e[keep].dead) t->e[out++] = t->e[keep];
    i = j;
  }
  t->n = out;
  t->dead = 0;
  t->sorted = 1;
  t->gen++;
  if (garbage > t->used / 4 && compact_arena(t) < 0) return -1;
  ferry_tree_trim(t);
  return 0;
}

size_t ferry_tree_lower(const ferry_tree *t, const char *path, size_t len) {
  size_t lo = 0, hi = t->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    const tree_entry *x = &t->e[mid];
    if (ferry_tree_cmp(tree_path(t, x), x->path_len, path, len) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

ptrdiff_t ferry_tree_find(const ferry_tree *t, const char *path, size_t len) {
  size_t i = ferry_tree_lower(t, path, len);
  if (i < t->n && !t->e[i].dead && t->e[i].path_len == len && memcmp(tree_path(t, &t->e[i]), path, len) == 0)
    return (ptrdiff_t)i;
  return -1;
}

/* The end of the run of entries from `lo` whose path starts with prefix (plen bytes, ending in '/'). */
size_t ferry_tree_prefix_end(const ferry_tree *t, size_t lo, const char *prefix, size_t plen) {
  size_t hi = t->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    const tree_entry *x = &t->e[mid];
    if (x->path_len >= plen && memcmp(tree_path(t, x), prefix, plen) == 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

size_t ferry_tree_subtree_end(const ferry_tree *t, size_t lo, const char *dir, size_t len) {
  size_t hi = t->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    const tree_entry *x = &t->e[mid];
    const char *p = tree_path(t, x);
    if (x->path_len > len && p[len] == '/' && memcmp(p, dir, len) == 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

typedef struct span {
  uint32_t off;
  uint16_t len;
} span;

int ferry_tree_fill_parents(ferry_tree *t) {
  span *stack = NULL;
  char *scratch = NULL; /* the parent's path: appending may move the arena it comes from */
  size_t depth = 0, cap = 0, scap = 0, n = t->n;
  int added = 0;
  for (size_t i = 0; i < n; i++) {
    const tree_entry *x = &t->e[i];
    if (x->dead) continue;
    const char *p = tree_path(t, x);
    size_t len = x->path_len;
    while (depth > 0) { /* pop what is not an ancestor of p */
      span *top = &stack[depth - 1];
      if (top->len < len && p[top->len] == '/' && memcmp(t->arena + top->off, p, top->len) == 0) break;
      depth--;
    }
    size_t start = depth > 0 ? (size_t)stack[depth - 1].len + 1 : 0;
    for (size_t k = start; k < len; k++) {
      if (p[k] != '/') continue;
      tree_fields f = {.kind = TREE_DIR, .mode = 0755, .implied = 1};
      const char *why;
      if (grow((void **)&scratch, &scap, k, 1, 256) < 0) goto fail;
      memcpy(scratch, p, k);
      if (ferry_tree_append(t, scratch, k, &f, &why) < 0) goto fail;
      x = &t->e[i];
      p = tree_path(t, x);
      if (grow((void **)&stack, &cap, depth + 1, sizeof *stack, 16) < 0) goto fail;
      stack[depth++] = (span){t->e[t->n - 1].off, (uint16_t)k};
      added = 1;
    }
    if (grow((void **)&stack, &cap, depth + 1, sizeof *stack, 16) < 0) goto fail;
    stack[depth++] = (span){x->off, (uint16_t)len};
  }
  free(stack);
  free(scratch);
  return added ? ferry_tree_settle_with(t, 1, NULL, NULL) : 0;
fail:
  free(stack);
  free(scratch);
  return -1;
}

/* ---- the tree as a Lua value, for every tree file and tar_writer.c ---- */

ferry_tree *ferry_tree_push(lua_State *L) {
  ferry_tree *t = lua_newuserdatauv(L, sizeof *t, 0);
  memset(t, 0, sizeof *t);
  t->sorted = 1;
  luaL_setmetatable(L, TREE_MT);
  return t;
}

static void settle(lua_State *L, ferry_tree *t) {
  if (ferry_tree_settle_with(t, 0, NULL, NULL) < 0) luaL_error(L, "tree: out of memory");
}

ferry_tree *ferry_tree_check(lua_State *L, int idx, const char *fn, const char *what) {
  ferry_tree *t = luaL_testudata(L, idx, TREE_MT);
  if (t == NULL) luaL_error(L, "%s: %s must be a tree, got %s", fn, what, luaL_typename(L, idx));
  settle(L, t);
  return t;
}

ferry_tree *ferry_tree_test(lua_State *L, int idx) {
  ferry_tree *t = luaL_testudata(L, idx, TREE_MT);
  if (t) settle(L, t);
  return t;
}

size_t ferry_tree_len(const ferry_tree *t) { return t->n; }

const char *ferry_tree_entry_at(const ferry_tree *t, size_t i, size_t *len, unsigned *flags, int *live) {
  const tree_entry *x = &t->e[i];
  *len = x->path_len;
  *flags = x->flags;
  *live = !x->dead;
  return tree_path(t, x);
}

void ferry_tree_record_sha(ferry_tree *t, size_t i, const unsigned char *md, uint64_t size) {
  tree_entry *x = &t->e[i];
  x->has_sha = md != NULL;
  if (md) {
    memcpy(x->sha, md, sizeof x->sha);
    x->size = size;
  }
}

unsigned long ferry_tree_gen(const ferry_tree *t) { return t->gen; }

void ferry_tree_free(ferry_tree *t) {
  ferry_tree_block_free(t->e, t->ebytes);
  ferry_tree_block_free(t->arena, t->acap);
  t->e = NULL;
  t->arena = NULL;
  t->n = t->cap = t->used = t->acap = t->ebytes = 0;
}

#define SCRATCH_MT "ferry.tree_scratch"

static int scratch_free(lua_State *L) {
  void **slot = luaL_checkudata(L, 1, SCRATCH_MT);
  free(*slot);
  *slot = NULL;
  return 0;
}

void **ferry_tree_scratch(lua_State *L) {
  void **slot = lua_newuserdatauv(L, sizeof *slot, 0);
  *slot = NULL;
  luaL_setmetatable(L, SCRATCH_MT);
  lua_toclose(L, -1);
  return slot;
}

void ferry_tree_open_scratch(lua_State *L) {
  static const luaL_Reg meta[] = {{"__close", scratch_free}, {"__gc", scratch_free}, {NULL, NULL}};
  ferry_new_class(L, SCRATCH_MT, meta, NULL);
}

void ferry_tree_add_methods(lua_State *L, const luaL_Reg *methods) {
  luaL_getmetatable(L, TREE_MT);
  lua_getfield(L, -1, "__index");
  luaL_setfuncs(L, methods, 0);
  lua_pop(L, 2);
}
