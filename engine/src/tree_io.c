/* A tree to bytes and back: ferry's own compact format (the state file's baseline), and the sandbox's
 * `find -printf` listing read straight into a tree.
 *
 * t:dump() -> string: a 60-byte header ("FERRYTRE", version u32, entry count u64, body length u64, SHA-256 of
 *   the body; integers little-endian), then the body: taken_at, the device table, and each entry in path
 *   order (the path front-coded against the one before, then kind and state bits, flags, mode, size, mtime,
 *   inode, device index, sha256 when known, link target, tar member name counts when named; integers as
 *   LEB128 varints, signed ones zigzagged). Removed entries are left out.
 * core.tree_load(bytes) -> tree | nil, "corrupt tree: <why>", "EINVAL"   every length is checked against
 *   what is there, the checksum before anything else is read, and the entries must come in strict path order.
 * core.tree_parse_listing(bytes) -> tree | nil, "listing: <why>", "EINVAL"
 *   the records ferry.remote's listing prints: kind letter, mode (octal), size, mtime (%T@), "./path", link
 *   target, each NUL-terminated; then optionally "H" and (./path, sha256sum output) pairs, the digest kept for
 *   a listed file when it is 64 hex digits (lowercased); then "E" (what follows is ignored). Kinds f, d, l are
 *   file, dir, symlink, the rest other; size is kept for files, target for symlinks; a path listed twice keeps
 *   its last record. Refused as malformed, unlike ferry.remote.parse_listing: a mode with a digit 8 or 9 or over
 *   07777, a size or mtime that is not a number, a path with an empty, '.' or '..' component.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "tree.h"

#define MAGIC "FERRYTRE"
#define VERSION 1
#define HEADER 60
#define MIN_ENTRY 12 /* bytes of the smallest encoded entry */

/* ---- encoding ---- */

typedef struct sink {
  unsigned char *p; /* NULL while only measuring */
  size_t n;
} sink;

static void put_byte(sink *o, unsigned v) {
  if (o->p) o->p[o->n] = (unsigned char)v;
  o->n++;
}

static void put_bytes(sink *o, const void *s, size_t len) {
  if (o->p && len) memcpy(o->p + o->n, s, len);
  o->n += len;
}

static void put_varint(sink *o, uint64_t v) {
  while (v >= 0x80) {
    put_byte(o, (unsigned)(v & 0x7f) | 0x80);
    v >>= 7;
  }
  put_byte(o, (unsigned)v);
}

static uint64_t zigzag(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }

static void put_le(unsigned char *p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static size_t shared_prefix(const char *a, size_t an, const char *b, size_t bn) {
  size_t n = an < bn ? an : bn, i = 0;
  while (i < n && a[i] == b[i]) i++;
  return i;
}

/* The body (or, with o->p NULL, its length); the number of entries written in *count. */
static void encode(const ferry_tree *t, sink *o, uint64_t *count) {
  put_byte(o, (unsigned)t->has_taken);
  put_varint(o, zigzag(t->taken_sec));
  put_varint(o, t->taken_nsec);
  put_varint(o, t->ndevs);
  for (unsigned i = 0; i < t->ndevs; i++) put_varint(o, t->devs[i]);
  const char *prev = "";
  size_t prev_len = 0;
  *count = 0;
  for (size_t i = 0; i < t->n; i++) {
    const tree_entry *x = &t->e[i];
    if (x->dead) continue;
    const char *p = tree_path(t, x);
    size_t common = shared_prefix(prev, prev_len, p, x->path_len);
    put_varint(o, common);
    put_varint(o, x->path_len - common);
    put_bytes(o, p + common, x->path_len - common);
    put_byte(o, x->kind | (unsigned)x->has_sha << 3 | (unsigned)x->implied << 4 | (unsigned)x->named << 5);
    put_byte(o, x->flags);
    put_varint(o, x->mode);
    put_varint(o, x->size);
    put_varint(o, zigzag(x->mtime_sec));
    put_varint(o, x->nsec);
    put_varint(o, x->ino);
    put_byte(o, x->dev);
    if (x->has_sha) put_bytes(o, x->sha, sizeof x->sha);
    put_varint(o, x->link_len);
    put_bytes(o, tree_link(t, x), x->link_len);
    if (x->named) {
      unsigned dots, slashes;
      ferry_tree_name_counts(t, x, &dots, &slashes);
      put_byte(o, dots);
      put_byte(o, slashes);
    }
    prev = p;
    prev_len = x->path_len;
    (*count)++;
  }
}

static int l_dump(lua_State *L) {
  ferry_tree *t = ferry_tree_check(L, 1, "tree: dump", "self");
  sink o = {NULL, 0};
  uint64_t count;
  encode(t, &o, &count);
  size_t body = o.n;
  unsigned char *buf = malloc(HEADER + body);
  if (buf == NULL) return luaL_error(L, "tree: dump: out of memory");
  o.p = buf + HEADER;
  o.n = 0;
  encode(t, &o, &count);
  memcpy(buf, MAGIC, 8);
  put_le(buf + 8, VERSION, 4);
  put_le(buf + 12, count, 8);
  put_le(buf + 20, body, 8);
  if (!EVP_Digest(buf + HEADER, body, buf + 28, NULL, EVP_sha256(), NULL)) {
    free(buf);
    return luaL_error(L, "tree: dump: sha256 failed");
  }
  lua_pushlstring(L, (const char *)buf, HEADER + body);
  free(buf);
  return 1;
}

/* ---- decoding ---- */

typedef struct source {
  const unsigned char *p;
  size_t n, pos;
  const char *err;
} source;

static unsigned get_byte(source *r) {
  if (r->pos >= r->n) {
    r->err = "truncated";
    return 0;
  }
  return r->p[r->pos++];
}

static uint64_t get_varint(source *r) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    unsigned b = get_byte(r);
    if (r->err) return 0;
    if (shift == 63 && b > 1) break;
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) return v;
  }
  r->err = "a number over 64 bits";
  return 0;
}

static const unsigned char *get_bytes(source *r, size_t len) {
  if (r->err) return NULL;
  if (len > r->n - r->pos) {
    r->err = "truncated";
    return NULL;
  }
  r->pos += len;
  return r->p + r->pos - len;
}

static int64_t unzigzag(uint64_t v) { return (int64_t)(v >> 1) ^ -(int64_t)(v & 1); }

static uint64_t get_le(const unsigned char *p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

/* One entry into t; path holds the previous path (*plen bytes) and receives this one. NULL or why not. */
static const char *decode_entry(source *r, ferry_tree *t, char *path, size_t *plen) {
  uint64_t common = get_varint(r), rest = get_varint(r);
  if (r->err) return r->err;
  if (common > *plen || rest > TREE_MAX_PATH - common) return "bad path length";
  const unsigned char *tail = get_bytes(r, (size_t)rest);
  if (tail == NULL) return r->err;
  size_t len = (size_t)(common + rest);
  memcpy(path + common, tail, (size_t)rest); /* the order is checked as it is appended */
  *plen = len;
  if (!ferry_fs_rel_ok(path, len)) return "bad path";
  unsigned bits = get_byte(r), flags = get_byte(r);
  tree_fields f = {.kind = (int)(bits & 7), .flags = flags, .implied = (int)(bits >> 4 & 1)};
  uint64_t mode = get_varint(r);
  f.size = get_varint(r);
  f.mtime_sec = unzigzag(get_varint(r));
  uint64_t nsec = get_varint(r);
  f.ino = get_varint(r);
  unsigned dev = get_byte(r);
  if (r->err) return r->err;
  if (f.kind < TREE_FILE || f.kind > TREE_OTHER || (bits & 0xc0)) return "bad kind";
  if (mode > 07777) return "bad mode";
  if (nsec >= TREE_NSEC) return "bad mtime";
  if (dev >= t->ndevs) return "bad device index";
  f.mode = (unsigned)mode;
  f.nsec = (uint32_t)nsec;
  f.dev = t->devs[dev];
  if (bits & 8) f.sha = get_bytes(r, 32);
  uint64_t link_len = get_varint(r);
  if (r->err) return r->err;
  if (link_len > TREE_MAX_LINK) return "bad link length";
  f.link = (const char *)get_bytes(r, (size_t)link_len);
  f.link_len = (size_t)link_len;
  if (bits & 32) {
    f.dots = get_byte(r);
    f.slashes = get_byte(r);
    if (!r->err && f.dots == 0 && f.slashes == 0) return "bad name counts";
  }
  if (r->err) return r->err;
  const char *why;
  if (ferry_tree_append(t, path, len, &f, &why) < 0) return why;
  return NULL;
}

/* nil, "corrupt tree: <why>", "EINVAL" (entry > 0: "corrupt tree: entry N: <why>"). */
static int corrupt(lua_State *L, uint64_t entry, const char *why) {
  if (entry) return ferry_fail(L, "EINVAL", "corrupt tree: entry %I: %s", (lua_Integer)entry, why);
  return ferry_fail(L, "EINVAL", "corrupt tree: %s", why);
}

static int l_tree_load(lua_State *L) {
  size_t len;
  const unsigned char *s = (const unsigned char *)ferry_check_string(L, 1, "tree_load", "bytes", &len);
  if (len < HEADER) return ferry_fail(L, "EINVAL", "corrupt tree: %I bytes, shorter than the header", (lua_Integer)len);
  if (memcmp(s, MAGIC, 8) != 0) return corrupt(L, 0, "not a ferry tree (bad magic)");
  uint64_t version = get_le(s + 8, 4), count = get_le(s + 12, 8), body = get_le(s + 20, 8);
  if (version != VERSION)
    return ferry_fail(L, "EINVAL", "corrupt tree: version %I, this ferry reads version %d", (lua_Integer)version,
                      VERSION);
  if (body != len - HEADER)
    return ferry_fail(L, "EINVAL", "corrupt tree: the header says %I bytes of entries, %I follow",
                      (lua_Integer)(body > LUA_MAXINTEGER ? LUA_MAXINTEGER : body), (lua_Integer)(len - HEADER));
  unsigned char md[32];
  if (!EVP_Digest(s + HEADER, body, md, NULL, EVP_sha256(), NULL)) return luaL_error(L, "tree_load: sha256 failed");
  if (memcmp(md, s + 28, 32) != 0) return corrupt(L, 0, "checksum mismatch");
  if (count > body / MIN_ENTRY) return corrupt(L, 0, "more entries than the bytes can hold");
  source r = {s + HEADER, (size_t)body, 0, NULL};
  void **box = ferry_tree_scratch(L); /* the path being decoded */
  ferry_tree *t = ferry_tree_push(L);
  t->has_taken = (int)get_byte(&r);
  t->taken_sec = unzigzag(get_varint(&r));
  uint64_t tn = get_varint(&r), ndevs = get_varint(&r);
  if (r.err) return corrupt(L, 0, r.err);
  if (t->has_taken > 1 || tn >= TREE_NSEC) return corrupt(L, 0, "bad taken_at");
  if (ndevs > TREE_MAX_DEVS) return corrupt(L, 0, "bad device table");
  t->taken_nsec = (uint32_t)tn;
  for (uint64_t i = 0; i < ndevs; i++) t->devs[t->ndevs++] = get_varint(&r);
  if (r.err) return corrupt(L, 0, r.err);
  char *path = *box = malloc(TREE_MAX_PATH);
  if (path == NULL || ferry_tree_reserve(t, (size_t)count) < 0) return luaL_error(L, "tree_load: out of memory");
  size_t plen = 0;
  for (uint64_t i = 0; i < count; i++) {
    const char *why = decode_entry(&r, t, path, &plen);
    if (why == NULL && !t->sorted) why = "out of order";
    if (why) return corrupt(L, i + 1, why);
  }
  if (r.pos != r.n) return corrupt(L, 0, "bytes after the last entry");
  ferry_tree_trim(t);
  return 1;
}

/* ---- the sandbox's listing ---- */

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

static int read_record(lua_State *L, listing *in, ferry_tree *t) {
  size_t at = in->pos, len[6];
  const char *f[6];
  for (int i = 0; i < 6; i++)
    if ((f[i] = field(in, &len[i])) == NULL) return listing_fail(L, "cut short", (size_t)-1);
  tree_fields e = {0};
  e.kind = len[0] == 1 && f[0][0] == 'f' ? TREE_FILE : len[0] == 1 && f[0][0] == 'd' ? TREE_DIR
         : len[0] == 1 && f[0][0] == 'l' ? TREE_SYMLINK : TREE_OTHER;
  uint64_t mode, size;
  if (parse_u64(f[1], len[1], 8, 07777, &mode) < 0) return listing_fail(L, "bad mode", at);
  if (parse_u64(f[2], len[2], 10, (uint64_t)INT64_MAX, &size) < 0) return listing_fail(L, "bad size", at);
  if (parse_mtime(f[3], len[3], &e.mtime_sec, &e.nsec) < 0) return listing_fail(L, "bad mtime", at);
  size_t rel_len;
  const char *rel = listed_path(f[4], len[4], &rel_len);
  if (rel == NULL || rel_len > TREE_MAX_PATH) return listing_fail(L, "bad path", at);
  e.mode = (unsigned)mode;
  if (e.kind == TREE_FILE) e.size = size;
  if (e.kind == TREE_SYMLINK) {
    if (len[5] > TREE_MAX_LINK) return listing_fail(L, "link target too long", at);
    e.link = f[5];
    e.link_len = len[5];
  }
  const char *why;
  if (ferry_tree_append(t, rel, rel_len, &e, &why) < 0) return luaL_error(L, "tree_parse_listing: %s", why);
  return 0;
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
  int hashing = 0;
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
  return 1;
}

void ferry_open_tree_io(lua_State *L) {
  static const luaL_Reg methods[] = {{"dump", l_dump}, {NULL, NULL}};
  ferry_tree_add_methods(L, methods);
  lua_pushcfunction(L, l_tree_load);
  lua_setfield(L, -2, "tree_load");
  lua_pushcfunction(L, l_tree_parse_listing);
  lua_setfield(L, -2, "tree_parse_listing");
}
