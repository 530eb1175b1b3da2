/* The sandbox's `find -printf` listing (ferry.remote's listing scripts) read straight into a tree, as it
 * arrives.
 *
 * core.tree_listing_reader() -> reader: reader:feed(bytes) -> true | nil, "listing: <why>", "EINVAL" (takes the
 *   output in pieces of any size, keeping only what does not make a whole record yet); reader:finish() ->
 *   tree, info | nil, "listing: <why>", "EINVAL"
 * core.tree_parse_listing(bytes) -> tree, info | nil, "listing: <why>", "EINVAL"   (the same, in one piece)
 *   what ferry.remote's listings print, every field NUL-terminated: "F" (a full listing) or "I" (only what
 *   changed since the sync marker), then for "I" optionally "R" (the remote dir itself changed); then the
 *   records: "c" (changed since the marker) or "u", kind letter, mode (octal), size, mtime (%T@), inode, device,
 *   "./path", link target; then optionally "H" and (./path, sha256sum output) pairs, the digest kept for a
 *   listed file when it is 64 hex digits (lowercased); then "E" (what follows is ignored). Kinds f, d, l are
 *   file, dir, symlink, the rest other; size is kept for files, target for symlinks; a "c" record gets flags 1;
 *   a path listed twice keeps its last record. info: {incremental = bool, root_changed = bool}.
 *   Refused as malformed ("listing: malformed record at byte N: <why>", N counting from the first byte fed): a
 *   missing or unknown header, a mode with a digit 8 or 9 or over 07777, a size, mtime, inode or device that
 *   is not a number, a path with an empty, '.' or '..' component, a link target over 32767 bytes, more than
 *   255 devices; "listing: cut short" when it ends before "E".
 */
#include <stdlib.h>
#include <string.h>

#include "tree.h"

#define READER_MT "ferry.tree_listing_reader"

enum { HEADER, AFTER_I, RECORDS, HASHES, DONE, FAILED };

typedef struct hash_rec {
  size_t off, len; /* the path in the reader's path arena */
  unsigned char sha[32];
} hash_rec;

typedef struct reader {
  char *buf;        /* the bytes not parsed yet */
  size_t len, cap, pos;
  size_t base;      /* the stream offset of buf[0] */
  int state, incremental, root_changed;
  hash_rec *hashes; /* the digests, applied once the tree is in order */
  size_t nhash, hcap;
  char *paths;      /* their paths */
  size_t pused, pcap;
  char why[160];    /* the failure, once FAILED */
} reader;

/* The next NUL-terminated field from r->pos, or NULL when the bytes so far end first. */
static const char *field(reader *r, size_t *pos, size_t *len) {
  if (*pos >= r->len) return NULL;
  const char *start = r->buf + *pos;
  const char *nul = memchr(start, '\0', r->len - *pos);
  if (nul == NULL) return NULL;
  *len = (size_t)(nul - start);
  *pos += *len + 1;
  return start;
}

/* Fail at the record starting at buf offset `at` ((size_t)-1: no place). Returns -1. */
static int fail(reader *r, const char *why, size_t at) {
  if (at == (size_t)-1) snprintf(r->why, sizeof r->why, "listing: %s", why);
  else snprintf(r->why, sizeof r->why, "listing: malformed record at byte %zu: %s", r->base + at, why);
  r->state = FAILED;
  return -1;
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

/* One record into t: 1, 0 when its bytes have not all come, -1 on a failure. */
static int read_record(reader *r, ferry_tree *t) {
  size_t at = r->pos, pos = r->pos, len[NFIELDS];
  const char *f[NFIELDS];
  for (int i = 0; i < NFIELDS; i++)
    if ((f[i] = field(r, &pos, &len[i])) == NULL) return 0;
  tree_fields e = {0};
  if (len[F_CHANGED] != 1 || (f[F_CHANGED][0] != 'c' && f[F_CHANGED][0] != 'u')) return fail(r, "bad record", at);
  e.flags = f[F_CHANGED][0] == 'c';
  char k = len[F_KIND] == 1 ? f[F_KIND][0] : '?';
  e.kind = k == 'f' ? TREE_FILE : k == 'd' ? TREE_DIR : k == 'l' ? TREE_SYMLINK : TREE_OTHER;
  uint64_t mode, size;
  if (parse_u64(f[F_MODE], len[F_MODE], 8, 07777, &mode) < 0) return fail(r, "bad mode", at);
  if (parse_u64(f[F_SIZE], len[F_SIZE], 10, (uint64_t)INT64_MAX, &size) < 0) return fail(r, "bad size", at);
  if (parse_mtime(f[F_MTIME], len[F_MTIME], &e.mtime_sec, &e.nsec) < 0) return fail(r, "bad mtime", at);
  if (parse_u64(f[F_INO], len[F_INO], 10, (uint64_t)INT64_MAX, &e.ino) < 0) return fail(r, "bad inode", at);
  if (parse_u64(f[F_DEV], len[F_DEV], 10, (uint64_t)INT64_MAX, &e.dev) < 0) return fail(r, "bad device", at);
  size_t rel_len;
  const char *rel = listed_path(f[F_PATH], len[F_PATH], &rel_len);
  if (rel == NULL || rel_len > TREE_MAX_PATH) return fail(r, "bad path", at);
  e.mode = (unsigned)mode;
  if (e.kind == TREE_FILE) e.size = size;
  if (e.kind == TREE_SYMLINK) {
    if (len[F_TARGET] > TREE_MAX_LINK) return fail(r, "link target too long", at);
    e.link = f[F_TARGET];
    e.link_len = len[F_TARGET];
  }
  const char *why;
  if (ferry_tree_append(t, rel, rel_len, &e, &why) < 0) return fail(r, why, at);
  r->pos = pos;
  return 1;
}

static int grow(void **p, size_t *cap, size_t need, size_t size) {
  if (need <= *cap) return 0;
  size_t c = *cap ? *cap : 64;
  while (c < need) c *= 2;
  void *q = realloc(*p, c * size);
  if (q == NULL) return -1;
  *p = q;
  *cap = c;
  return 0;
}

/* One (path, digest) pair: 1, 0 when its bytes have not all come, -1 on a failure. */
static int read_hash(reader *r) {
  size_t at = r->pos, pos = r->pos, plen, slen, rel_len;
  const char *p = field(r, &pos, &plen), *sum = p ? field(r, &pos, &slen) : NULL;
  if (sum == NULL) return 0;
  const char *rel = listed_path(p, plen, &rel_len);
  if (rel == NULL) return fail(r, "bad path in the hashes", at);
  r->pos = pos;
  unsigned char md[32];
  if (leading_sha(sum, slen, md) < 0) return 1; /* an unreadable file: no digest */
  if (grow((void **)&r->hashes, &r->hcap, r->nhash + 1, sizeof *r->hashes) < 0 ||
      grow((void **)&r->paths, &r->pcap, r->pused + rel_len, 1) < 0)
    return fail(r, "out of memory", (size_t)-1);
  memcpy(r->paths + r->pused, rel, rel_len);
  hash_rec *h = &r->hashes[r->nhash++];
  h->off = r->pused;
  h->len = rel_len;
  memcpy(h->sha, md, 32);
  r->pused += rel_len;
  return 1;
}

/* The two-byte marker `c` NUL at r->pos: 1 consumed, 0 not there, -1 not enough bytes to tell. */
static int marker(reader *r, char c) {
  if (r->len - r->pos < 2) return -1;
  if (r->buf[r->pos] != c || r->buf[r->pos + 1] != '\0') return 0;
  r->pos += 2;
  return 1;
}

/* Parse what the buffer holds, as far as whole units go. 0, or -1 on a failure. */
static int parse(reader *r, ferry_tree *t) {
  for (;;) {
    int got;
    switch (r->state) {
    case HEADER:
      if ((got = marker(r, 'I')) < 0) return 0;
      if (got) {
        r->incremental = 1;
        r->state = AFTER_I;
      } else if ((got = marker(r, 'F')) == 1) {
        r->state = RECORDS;
      } else {
        return fail(r, "no header", 0);
      }
      break;
    case AFTER_I:
      if ((got = marker(r, 'R')) < 0) return 0;
      r->root_changed = got;
      r->state = RECORDS;
      break;
    case RECORDS:
      if ((got = marker(r, 'E')) < 0) return 0;
      if (got) {
        r->state = DONE;
        break;
      }
      if (marker(r, 'H') == 1) {
        r->state = HASHES;
        break;
      }
      if ((got = read_record(r, t)) <= 0) return got;
      break;
    case HASHES:
      if ((got = marker(r, 'E')) < 0) return 0;
      if (got) {
        r->state = DONE;
        break;
      }
      if ((got = read_hash(r)) <= 0) return got;
      break;
    default: return r->state == FAILED ? -1 : 0;
    }
  }
}

static int reader_gc(lua_State *L) {
  reader *r = luaL_checkudata(L, 1, READER_MT);
  free(r->buf);
  free(r->hashes);
  free(r->paths);
  r->buf = r->paths = NULL;
  r->hashes = NULL;
  return 0;
}

static reader *check_reader(lua_State *L, const char *method) {
  reader *r = luaL_testudata(L, 1, READER_MT);
  if (r == NULL) luaL_error(L, "tree_listing_reader: %s: expected a reader (use reader:%s)", method, method);
  return r;
}

static ferry_tree *reader_tree(lua_State *L) {
  lua_getiuservalue(L, 1, 1);
  ferry_tree *t = luaL_checkudata(L, -1, TREE_MT);
  lua_pop(L, 1); /* anchored by the reader */
  return t;
}

static int failed(lua_State *L, reader *r) {
  lua_pushnil(L);
  lua_pushstring(L, r->why);
  lua_pushliteral(L, "EINVAL");
  return 3;
}

/* Take bytes: what makes whole units is parsed, the rest kept. */
static int feed(lua_State *L, reader *r, const char *s, size_t n) {
  if (r->state == FAILED) return failed(L, r);
  if (r->state == DONE) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (r->pos > 0) { /* drop what was parsed */
    memmove(r->buf, r->buf + r->pos, r->len - r->pos);
    r->len -= r->pos;
    r->base += r->pos;
    r->pos = 0;
  }
  if (grow((void **)&r->buf, &r->cap, r->len + n, 1) < 0) return luaL_error(L, "tree_listing_reader: out of memory");
  if (n > 0) memcpy(r->buf + r->len, s, n); /* an empty first chunk leaves buf NULL */
  r->len += n;
  if (parse(r, reader_tree(L)) < 0) return failed(L, r);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_feed(lua_State *L) {
  reader *r = check_reader(L, "feed");
  size_t n;
  const char *s = ferry_check_string(L, 2, "tree_listing_reader: feed", "bytes", &n);
  return feed(L, r, s, n);
}

/* The tree in path order with the digests on its files, and the info; or nil, why, "EINVAL". */
static int finish(lua_State *L, reader *r) {
  if (r->state != DONE && r->state != FAILED) fail(r, "cut short", (size_t)-1);
  if (r->state == FAILED) return failed(L, r);
  lua_getiuservalue(L, 1, 1);
  ferry_tree *t = luaL_checkudata(L, -1, TREE_MT);
  if (ferry_tree_settle_with(t, 0, NULL, NULL) < 0) return luaL_error(L, "tree_listing_reader: out of memory");
  for (size_t i = 0; i < r->nhash; i++) {
    ptrdiff_t k = ferry_tree_find(t, r->paths + r->hashes[i].off, r->hashes[i].len);
    if (k >= 0 && t->e[k].kind == TREE_FILE) {
      memcpy(t->e[k].sha, r->hashes[i].sha, 32);
      t->e[k].has_sha = 1;
    }
  }
  lua_createtable(L, 0, 2);
  lua_pushboolean(L, r->incremental);
  lua_setfield(L, -2, "incremental");
  lua_pushboolean(L, r->root_changed);
  lua_setfield(L, -2, "root_changed");
  return 2;
}

static int l_finish(lua_State *L) { return finish(L, check_reader(L, "finish")); }

/* Push a new reader with its tree (uservalue 1); it goes to index 1 (the methods expect it there). */
static reader *new_reader(lua_State *L) {
  reader *r = lua_newuserdatauv(L, sizeof *r, 1);
  memset(r, 0, sizeof *r);
  luaL_setmetatable(L, READER_MT);
  ferry_tree_push(L);
  lua_setiuservalue(L, -2, 1);
  return r;
}

static int l_tree_listing_reader(lua_State *L) {
  new_reader(L);
  return 1;
}

static int l_tree_parse_listing(lua_State *L) {
  size_t n;
  const char *s = ferry_check_string(L, 1, "tree_parse_listing", "bytes", &n);
  lua_settop(L, 1);
  reader *r = new_reader(L);
  lua_insert(L, 1); /* the reader at 1 (where the methods find it), the bytes at 2 */
  int pushed = feed(L, r, s, n);
  if (pushed != 1) return pushed;
  lua_pop(L, 1);
  return finish(L, r);
}

void ferry_open_tree_listing(lua_State *L) {
  static const luaL_Reg methods[] = {{"feed", l_feed}, {"finish", l_finish}, {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__gc", reader_gc}, {NULL, NULL}};
  ferry_new_class(L, READER_MT, meta, methods);
  lua_pushcfunction(L, l_tree_listing_reader);
  lua_setfield(L, -2, "tree_listing_reader");
  lua_pushcfunction(L, l_tree_parse_listing);
  lua_setfield(L, -2, "tree_parse_listing");
}
