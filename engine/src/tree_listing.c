/* The sandbox's `find -printf` listing (ferry.remote's listing scripts) read straight into a tree.
 *
 * core.tree_parse_listing(bytes) -> tree, info | nil, "listing: <why>", "EINVAL"
 *   what ferry.remote's listings print, every field NUL-terminated: "F" (a full listing) or "I" (only what
 *   changed since the sync marker), then for "I" optionally "R" (the remote dir itself changed); then the
 *   records: "c" (changed since the marker) or "u", kind letter, mode (octal), size, mtime (%T@), inode, device,
 *   "./path", link target; then optionally "H" and (./path, sha256sum output) pairs, the digest kept for a
 *   listed file when it is 64 hex digits (lowercased); then "E" (what follows is ignored). Kinds f, d, l are
 *   file, dir, symlink, the rest other; size is kept for files, target for symlinks; a "c" record gets flags 1;
 *   a path listed twice keeps its last record. info: {incremental = bool, root_changed = bool}.
 *   Refused as malformed: a missing or unknown header, a mode with a digit 8 or 9 or over 07777, a size,
 *   mtime, inode or device that is not a number, a path with an empty, '.' or '..' component, a link target
 *   over 32767 bytes, more than 255 devices.
 */
#include <stdlib.h>
#include <string.h>

#include "tree.h"

typedef struct listing {
  const char *s;
  size_t n, pos;
} listing;

/* The next NUL-terminated field, or NULL when the input ends first. */
static const char *field(listing *in, size_t *len) {
  if (in->pos >= in->n) return NULL;
  const char *start = in->s + in->pos;
  const char *nul = memchr(start, '\0', in->n - in->pos);
  if (nul == NULL) return NULL;
  *len = (size_t)(nul - start);
  in->pos += *len + 1;
  return start;
}

static int parse_u64(const char *s, size_t len, int base, uint64_t max, uint64_t *out) {
  if (len == 0) return -1;
  uint64_t v = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned d = (unsigned)(s[i] - '0');
    if (d >= (unsigned)base || v > (max - d) / (uint64_t)base) return -1;
    v = v * (uint64_t)base + d;
  }
  *out = v;
  return 0;
}

/* "[-]digits[.digits]" into seconds and nanoseconds (extra fraction digits dropped). */
static int parse_mtime(const char *s, size_t len, int64_t *sec, uint32_t *nsec) {
  int neg = len > 0 && s[0] == '-';
  size_t i = neg, dot = i;
  while (dot < len && s[dot] != '.') dot++;
  uint64_t whole, frac = 0;
  if (parse_u64(s + i, dot - i, 10, (uint64_t)INT64_MAX - 1, &whole) < 0) return -1;
  if (dot < len) {
    size_t digits = len - dot - 1;
    if (digits == 0) return -1;
    uint64_t scale = TREE_NSEC;
    for (size_t k = dot + 1; k < len; k++) {
      if (s[k] < '0' || s[k] > '9') return -1;
      if (scale > 1) {
        scale /= 10;
        frac += (uint64_t)(s[k] - '0') * scale;
      }
    }
  }
  if (neg && frac > 0) { /* -1.25 is 0.75 s past -2 */
    *sec = -(int64_t)whole - 1;
    *nsec = (uint32_t)(TREE_NSEC - frac);
  } else {
    *sec = neg ? -(int64_t)whole : (int64_t)whole;
    *nsec = (uint32_t)frac;
  }
  return 0;
}

static int listing_fail(lua_State *L, const char *why, size_t at) {
  if (at == (size_t)-1) return ferry_fail(L, "EINVAL", "listing: %s", why);
  return ferry_fail(L, "EINVAL", "listing: malformed record at byte %I: %s", (lua_Integer)at, why);
}

typedef struct hash_rec {
  size_t off, len; /* the path in the input, without "./" */
  unsigned char sha[32];
} hash_rec;

static int hex_nibble(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  c |= 0x20;
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The digest at the start of sha256sum's output: exactly 64 hex digits, then anything but a hex digit. */
static int leading_sha(const char *s, size_t len, unsigned char *md) {
  if (len < 64 || (len > 64 && hex_nibble((unsigned char)s[64]) >= 0)) return -1;
  for (int i = 0; i < 32; i++) {
    int hi = hex_nibble((unsigned char)s[2 * i]), lo = hex_nibble((unsigned char)s[2 * i + 1]);
    if (hi < 0 || lo < 0) return -1;
    md[i] = (unsigned char)(hi << 4 | lo);
  }
  return 0;
}

/* A "./path" field as the path after "./", or NULL. */
static const char *listed_path(const char *p, size_t len, size_t *rel_len) {
  if (len < 3 || p[0] != '.' || p[1] != '/' || !ferry_fs_rel_ok(p + 2, len - 2)) return NULL;
  *rel_len = len - 2;
  return p + 2;
}

enum { F_CHANGED, F_KIND, F_MODE, F_SIZE, F_MTIME, F_INO, F_DEV, F_PATH, F_TARGET, NFIELDS };

static int read_record(lua_State *L, listing *in, ferry_tree *t) {
  size_t at = in->pos, len[NFIELDS];
  const char *f[NFIELDS];
  for (int i = 0; i < NFIELDS; i++)
    if ((f[i] = field(in, &len[i])) == NULL) return listing_fail(L, "cut short", (size_t)-1);
  tree_fields e = {0};
  if (len[F_CHANGED] != 1 || (f[F_CHANGED][0] != 'c' && f[F_CHANGED][0] != 'u'))
    return listing_fail(L, "bad record", at);
  e.flags = f[F_CHANGED][0] == 'c';
  char k = len[F_KIND] == 1 ? f[F_KIND][0] : '?';
  e.kind = k == 'f' ? TREE_FILE : k == 'd' ? TREE_DIR : k == 'l' ? TREE_SYMLINK : TREE_OTHER;
  uint64_t mode, size;
  if (parse_u64(f[F_MODE], len[F_MODE], 8, 07777, &mode) < 0) return listing_fail(L, "bad mode", at);
  if (parse_u64(f[F_SIZE], len[F_SIZE], 10, (uint64_t)INT64_MAX, &size) < 0) return listing_fail(L, "bad size", at);
  if (parse_mtime(f[F_MTIME], len[F_MTIME], &e.mtime_sec, &e.nsec) < 0) return listing_fail(L, "bad mtime", at);
  if (parse_u64(f[F_INO], len[F_INO], 10, (uint64_t)INT64_MAX, &e.ino) < 0) return listing_fail(L, "bad inode", at);
  if (parse_u64(f[F_DEV], len[F_DEV], 10, (uint64_t)INT64_MAX, &e.dev) < 0) return listing_fail(L, "bad device", at);
  size_t rel_len;
  const char *rel = listed_path(f[F_PATH], len[F_PATH], &rel_len);
  if (rel == NULL || rel_len > TREE_MAX_PATH) return listing_fail(L, "bad path", at);
  e.mode = (unsigned)mode;
  if (e.kind == TREE_FILE) e.size = size;
  if (e.kind == TREE_SYMLINK) {
    if (len[F_TARGET] > TREE_MAX_LINK) return listing_fail(L, "link target too long", at);
    e.link = f[F_TARGET];
    e.link_len = len[F_TARGET];
  }
  const char *why;
  if (ferry_tree_append(t, rel, rel_len, &e, &why) < 0) {
    if (strcmp(why, "out of memory") == 0) return luaL_error(L, "tree_parse_listing: out of memory");
    return listing_fail(L, why, at);
  }
  return 0;
}

/* The two-byte marker `c` NUL at the input's position: consumed (1), or not there (0). */
static int marker(listing *in, char c) {
  if (in->n - in->pos < 2 || in->s[in->pos] != c || in->s[in->pos + 1] != '\0') return 0;
  in->pos += 2;
  return 1;
}

/* The hash records into a list (*box); 0 or the number of values pushed for a failure. */
static int read_hashes(lua_State *L, listing *in, void **box, size_t *n, size_t *cap) {
  while (!(in->n - in->pos >= 2 && in->s[in->pos] == 'E' && in->s[in->pos + 1] == '\0')) {
    size_t at = in->pos, plen, slen, rel_len;
    const char *p = field(in, &plen), *sum = p ? field(in, &slen) : NULL;
    if (sum == NULL) return listing_fail(L, "cut short", (size_t)-1);
    const char *rel = listed_path(p, plen, &rel_len);
    if (rel == NULL) return listing_fail(L, "bad path in the hashes", at);
    unsigned char md[32];
    if (leading_sha(sum, slen, md) < 0) continue; /* an unreadable file: no digest */
    if (*n == *cap) {
      size_t c = *cap ? *cap * 2 : 64;
      hash_rec *q = realloc(*box, c * sizeof *q);
      if (q == NULL) return luaL_error(L, "tree_parse_listing: out of memory");
      *box = q;
      *cap = c;
    }
    hash_rec *rec = (hash_rec *)*box + *n;
    *rec = (hash_rec){(size_t)(rel - in->s), rel_len, {0}};
    memcpy(rec->sha, md, 32);
    (*n)++;
  }
  return 0;
}

static int l_tree_parse_listing(lua_State *L) {
  size_t n;
  const char *s = ferry_check_string(L, 1, "tree_parse_listing", "bytes", &n);
  lua_settop(L, 1);
  void **box = ferry_tree_scratch(L); /* 2: the hash records */
  ferry_tree *t = ferry_tree_push(L); /* 3 */
  listing in = {s, n, 0};
  size_t nrec = 0, cap = 0;
  int hashing = 0, incremental = marker(&in, 'I'), root_changed = 0;
  if (incremental) root_changed = marker(&in, 'R');
  else if (!marker(&in, 'F')) return in.n < 2 ? listing_fail(L, "cut short", (size_t)-1) : listing_fail(L, "no header", 0);
  for (;;) {
    int two = in.n - in.pos >= 2 && in.s[in.pos + 1] == '\0';
    if (two && in.s[in.pos] == 'E') break;
    int pushed;
    if (two && in.s[in.pos] == 'H' && !hashing) {
      hashing = 1;
      in.pos += 2;
      pushed = read_hashes(L, &in, box, &nrec, &cap);
    } else {
      pushed = read_record(L, &in, t);
    }
    if (pushed) return pushed;
  }
  if (ferry_tree_settle_with(t, 0, NULL, NULL) < 0) return luaL_error(L, "tree_parse_listing: out of memory");
  const hash_rec *recs = *box;
  for (size_t i = 0; i < nrec; i++) {
    ptrdiff_t k = ferry_tree_find(t, s + recs[i].off, recs[i].len);
    if (k >= 0 && t->e[k].kind == TREE_FILE) {
      memcpy(t->e[k].sha, recs[i].sha, 32);
      t->e[k].has_sha = 1;
    }
  }
  lua_settop(L, 3);
  lua_createtable(L, 0, 2);
  lua_pushboolean(L, incremental);
  lua_setfield(L, -2, "incremental");
  lua_pushboolean(L, root_changed);
  lua_setfield(L, -2, "root_changed");
  return 2;
}

void ferry_open_tree_listing(lua_State *L) {
  lua_pushcfunction(L, l_tree_parse_listing);
  lua_setfield(L, -2, "tree_parse_listing");
}
