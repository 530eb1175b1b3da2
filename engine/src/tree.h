/* The compact tree shared by tree.c (storage, order), tree_object.c (the Lua object), tree_diff.c, tree_walk.c, tree_io.c and
 * tree_tar.c. Other concepts see only the small interface in internal.h.
 *
 * One fixed-size entry per path (72 bytes) in an array kept in path order, and every path, link target and
 * tar member name in one byte arena. Path order is byte order with '/' sorting before every other byte: the
 * order of a depth-first walk that reads each directory sorted by name. A directory comes before its
 * contents and its subtree is contiguous.
 */
#ifndef FERRY_TREE_H
#define FERRY_TREE_H

#include <stddef.h>
#include <stdint.h>

#include "internal.h"

#define TREE_MT "ferry.tree"

enum { TREE_FILE = 1, TREE_DIR = 2, TREE_SYMLINK = 3, TREE_OTHER = 4 };

#define TREE_MAX_PATH ((unsigned)FERRY_TREE_MAX_PATH) /* bytes of a path; longer ones are refused */
#define TREE_MAX_LINK 32767u  /* bytes of a symlink target */
#define TREE_MAX_PREFIX 255u  /* "./" prefixes or trailing '/' of a tar member name */
#define TREE_MAX_DEVS 255u    /* distinct st_dev values of one tree */
#define TREE_NSEC 1000000000u

typedef struct tree_entry {
  unsigned char sha[32];  /* valid when has_sha */
  uint64_t size;          /* files; 0 for the other kinds */
  int64_t mtime_sec;
  uint64_t ino;
  uint32_t off;           /* arena: path, then link target, then (named) the two prefix counts */
  uint32_t nsec : 30, has_sha : 1, implied : 1;
  uint16_t path_len;
  uint16_t link_len : 15, named : 1; /* named: a tar member name other than the path itself */
  uint16_t mode : 12, kind : 3, dead : 1;
  uint8_t flags; /* the caller's */
  uint8_t dev;   /* index into the tree's device table */
} tree_entry;

struct ferry_tree {
  tree_entry *e;
  size_t n, cap, ebytes; /* entries, room for, bytes held */
  char *arena;
  size_t used, acap;     /* bytes used, bytes held */
  uint64_t devs[TREE_MAX_DEVS];
  unsigned ndevs;
  size_t dead;         /* entries marked dead, still in e[] */
  int sorted;          /* e[] is in path order without duplicates */
  unsigned long gen;   /* bumped whenever entries move */
  int64_t taken_sec;   /* the start of the walk that made it, when has_taken */
  uint32_t taken_nsec;
  int has_taken;
};

/* An entry being added: every field but the path. */
typedef struct tree_fields {
  int kind;
  unsigned mode;
  uint64_t size, ino, dev;
  int64_t mtime_sec;
  uint32_t nsec;
  const unsigned char *sha; /* NULL: unknown */
  const char *link;         /* symlink target (link_len bytes) */
  size_t link_len;
  unsigned dots, slashes;   /* tar member name = "./" x dots + path + "/" x slashes */
  unsigned flags;
  int implied;
} tree_fields;

/* Push a new empty tree. */
ferry_tree *ferry_tree_push(lua_State *L);
/* The tree at idx, or raise "<fn>: <what> must be a tree, got <type>". Settled (in order) when it returns. */
ferry_tree *ferry_tree_check(lua_State *L, int idx, const char *fn, const char *what);
/* Append an entry (any order; later adds of a path replace earlier ones when the tree is settled).
 * 0, or -1 when out of memory or over a limit (*why says which). */
int ferry_tree_append(ferry_tree *t, const char *path, size_t len, const tree_fields *f, const char **why);
/* Sort and drop dead and duplicate entries (keep_first: the first added of a duplicate path stays, else the
 * last). on_dup, when not NULL, sees each dropped duplicate before it goes. -1 when out of memory. */
typedef void (*tree_dup_fn)(ferry_tree *t, const tree_entry *dropped, void *ud);
int ferry_tree_settle_with(ferry_tree *t, int keep_first, tree_dup_fn on_dup, void *ud);
/* Insert a directory entry (mode 0755, implied) for every missing parent. -1 when out of memory. */
int ferry_tree_fill_parents(ferry_tree *t);
/* The end of the run of entries from lo whose path starts with prefix (plen bytes, ending in '/'). */
size_t ferry_tree_prefix_end(const ferry_tree *t, size_t lo, const char *prefix, size_t plen);
/* The end of the run of entries from `lo` below dir (len bytes): whose path starts with dir and a '/'. */
size_t ferry_tree_subtree_end(const ferry_tree *t, size_t lo, const char *dir, size_t len);
/* Index of path in a settled tree, or -1. */
ptrdiff_t ferry_tree_find(const ferry_tree *t, const char *path, size_t len);
/* Index of the first entry at or after path (n when none). */
size_t ferry_tree_lower(const ferry_tree *t, const char *path, size_t len);
int ferry_tree_cmp(const char *a, size_t an, const char *b, size_t bn); /* path order: <0, 0, >0 */
static inline const char *tree_path(const ferry_tree *t, const tree_entry *x) { return t->arena + x->off; }
static inline const char *tree_link(const ferry_tree *t, const tree_entry *x) {
  return t->arena + x->off + x->path_len;
}
/* The tar member name's "./" prefixes and trailing '/' count of a named entry. */
void ferry_tree_name_counts(const ferry_tree *t, const tree_entry *x, unsigned *dots, unsigned *slashes);
/* Push the tar member name of x ("./" x dots + path + "/" x slashes). */
void ferry_tree_push_name(lua_State *L, const ferry_tree *t, const tree_entry *x);
uint64_t ferry_tree_dev(const ferry_tree *t, const tree_entry *x);
/* The index of device dev in t's table (added when new): 0, or -1 when the table is full. */
int ferry_tree_dev_index(ferry_tree *t, uint64_t dev, unsigned *out);
const char *ferry_tree_kind_name(int kind); /* "file" "dir" "symlink" "other" */
/* A block of memory of its own (a mapping; heap memory under AddressSanitizer), so that a large tree or
 * dump costs what it holds and gives it back whole: resized to at least `want` bytes (the size held in
 * *bytes), or NULL with p untouched. */
void *ferry_tree_block(void *p, size_t *bytes, size_t want);
void ferry_tree_block_free(void *p, size_t bytes);
/* Room for `entries` entries. 0 or -1. */
int ferry_tree_reserve(ferry_tree *t, size_t entries);
/* Shrink the arrays to what they hold (after a build). */
void ferry_tree_trim(ferry_tree *t);

/* Give back what a tree holds (its __gc). */
void ferry_tree_free(ferry_tree *t);
/* Push a to-be-closed box for one malloc'd buffer and return its slot: whatever the slot holds when the
 * calling C function ends (returns or raises) is freed. */
void **ferry_tree_scratch(lua_State *L);
/* Add methods to the tree's class (the other tree files' methods). */
void ferry_tree_add_methods(lua_State *L, const luaL_Reg *methods);
/* Registration: the scratch box's class (tree.c), tree_diff.c's functions into the core table on top. */
void ferry_tree_open_scratch(lua_State *L);
void ferry_tree_open_diff(lua_State *L);
void ferry_tree_open_edit(lua_State *L); /* tree_edit.c's methods */

#endif
