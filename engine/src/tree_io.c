/* A tree to bytes and back, in ferry's own compact format (what a state file keeps of a tree).
 *
 * t:dump() -> string: a 60-byte header ("FERRYTRE", version u32, entry count u64, body length u64, SHA-256 of
 *   the body; integers little-endian), then the body: taken_at, the device table, and each entry in path
 *   order (the path front-coded against the one before, then kind and state bits, flags, mode, size, mtime,
 *   inode, device index, sha256 when known, link target, tar member name counts when named; integers as
 *   LEB128 varints, signed ones zigzagged). Removed entries are left out.
 * core.tree_load(bytes) -> tree | nil, "corrupt tree: <why>", "EINVAL"   every length is checked against
 *   what is there, the checksum before anything else is read, and the entries must come in strict path order.
 * t:write(path[, mode=0600]) -> true, checksum | nil, "tree_write <path>: <reason>", code   the dump written to
 *   a temp file beside path, then renamed over it (a reader sees the old file or the new one), never held in a
 *   Lua string; checksum: the header's SHA-256 of the body, 64 hex digits (what a state file records of it)
 * core.tree_read(path) -> tree, checksum | nil, "tree_read <path>: <reason>", code | nil, "corrupt tree: <why>",
 *   "EINVAL"   (core.tree_load(bytes) returns the checksum too)
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* The dump of t in a block of its own (ferry_tree_block; *held bytes held, *len used), or NULL. */
static unsigned char *dump_block(const ferry_tree *t, size_t *held, size_t *len) {
  sink o = {NULL, 0};
  uint64_t count;
  encode(t, &o, &count);
  size_t body = o.n;
  *held = 0;
  unsigned char *buf = ferry_tree_block(NULL, held, HEADER + body);
  if (buf == NULL) return NULL;
  o.p = buf + HEADER;
  o.n = 0;
  encode(t, &o, &count);
  memcpy(buf, MAGIC, 8);
  put_le(buf + 8, VERSION, 4);
  put_le(buf + 12, count, 8);
  put_le(buf + 20, body, 8);
  if (!EVP_Digest(buf + HEADER, body, buf + 28, NULL, EVP_sha256(), NULL)) {
    ferry_tree_block_free(buf, *held);
    return NULL;
  }
  *len = HEADER + body;
  return buf;
}

static int l_dump(lua_State *L) {
  ferry_tree *t = ferry_tree_check(L, 1, "tree: dump", "self");
  size_t held, len;
  unsigned char *buf = dump_block(t, &held, &len);
  if (buf == NULL) return luaL_error(L, "tree: dump: out of memory");
  lua_pushlstring(L, (const char *)buf, len);
  ferry_tree_block_free(buf, held);
  return 1;
}

static int l_write(lua_State *L) {
  ferry_tree *t = ferry_tree_check(L, 1, "tree: write", "self");
  size_t plen;
  const char *path = ferry_check_path(L, 2, "tree: write", "path", &plen);
  lua_Integer mode = luaL_optinteger(L, 3, 0600);
  if (mode < 0 || mode > 0777) return luaL_error(L, "tree: write: mode must be in 0..0777");
  const char *slash = strrchr(path, '/');
  const char *leaf = slash ? slash + 1 : path;
  if (*leaf == '\0') return luaL_error(L, "tree: write: path must name a file, got '%s'", path);
  const char *dir = slash == NULL ? "." : slash == path ? "/" : lua_pushlstring(L, path, (size_t)(slash - path));
  int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirfd < 0) return ferry_sys_fail(L, errno, "tree_write", path);
  size_t held, len;
  unsigned char *buf = dump_block(t, &held, &len);
  if (buf == NULL) {
    close(dirfd);
    return luaL_error(L, "tree: write: out of memory");
  }
  ferry_fs_tmp tmp;
  ferry_fs_tmp_init(&tmp);
  int err = ferry_fs_tmp_create(&tmp, dirfd); /* owns dirfd from here */
  if (err == 0) err = ferry_fs_tmp_write(&tmp, buf, len);
  if (err == 0) err = ferry_fs_tmp_commit(&tmp, leaf, (unsigned)mode, 0);
  else ferry_fs_tmp_abort(&tmp);
  char sum[65];
  ferry_hex(buf + 28, 32, sum);
  ferry_tree_block_free(buf, held);
  if (err < 0) return ferry_sys_fail(L, -err, "tree_write", path);
  lua_pushboolean(L, 1);
  lua_pushstring(L, sum);
  return 2;
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

/* Push the tree dumped in s[0..len), or nil, "corrupt tree: ...", "EINVAL". */
static int load(lua_State *L, const unsigned char *s, size_t len) {
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
  char sum[65];
  ferry_hex(s + 28, 32, sum);
  lua_pushstring(L, sum);
  return 2;
}

static int l_tree_load(lua_State *L) {
  size_t len;
  const unsigned char *s = (const unsigned char *)ferry_check_string(L, 1, "tree_load", "bytes", &len);
  return load(L, s, len);
}

#define MAPPING_MT "ferry.tree_mapping"

typedef struct mapping {
  void *p;
  size_t len;
} mapping;

static int mapping_release(lua_State *L) {
  mapping *m = luaL_checkudata(L, 1, MAPPING_MT);
  if (m->p) munmap(m->p, m->len);
  m->p = NULL;
  return 0;
}

static int l_tree_read(lua_State *L) {
  const char *path = ferry_check_path(L, 1, "tree_read", "path", NULL);
  lua_settop(L, 1);
  mapping *m = lua_newuserdatauv(L, sizeof *m, 0); /* 2: unmapped however this call ends */
  m->p = NULL;
  luaL_setmetatable(L, MAPPING_MT);
  lua_toclose(L, 2);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ferry_sys_fail(L, errno, "tree_read", path);
  struct stat st;
  int err = fstat(fd, &st) < 0 ? errno : S_ISREG(st.st_mode) ? 0 : EINVAL;
  if (err == 0 && st.st_size > 0) {
    m->p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m->p == MAP_FAILED) {
      err = errno;
      m->p = NULL;
    }
    m->len = (size_t)st.st_size;
  }
  close(fd);
  if (err) return ferry_sys_fail(L, err, "tree_read", path);
  return load(L, m->p ? m->p : (const unsigned char *)"", m->p ? m->len : 0);
}

void ferry_open_tree_io(lua_State *L) {
  static const luaL_Reg methods[] = {{"dump", l_dump}, {"write", l_write}, {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__close", mapping_release}, {"__gc", mapping_release}, {NULL, NULL}};
  ferry_new_class(L, MAPPING_MT, meta, NULL);
  ferry_tree_add_methods(L, methods);
  lua_pushcfunction(L, l_tree_load);
  lua_setfield(L, -2, "tree_load");
  lua_pushcfunction(L, l_tree_read);
  lua_setfield(L, -2, "tree_read");
}
