/* base64 (RFC 4648 alphabet, '=' padding): one-shot encode/decode and streaming encoder/decoder objects.
 *
 * Speed comes from lookup tables built at compile time: encoding maps 12 input bits to two output
 * characters at once; decoding ORs four pre-shifted 32-bit entries per 4-character group, where any
 * character outside the alphabet sets a high flag bit, so the common case (a run of plain groups) costs
 * one test per group. Whitespace, padding and errors leave that fast path for a byte-at-a-time one. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

#define ENCODER_KEY "ferry.b64_encoder"
#define DECODER_KEY "ferry.b64_decoder"
#define MAPPING_KEY "ferry.b64_mapping"

/* ---- tables ------------------------------------------------------------------------------------ */

/* 256 (or 4096) table entries from a macro f applied to each index. */
#define REP4(f, n) f(n), f((n) + 1), f((n) + 2), f((n) + 3)
#define REP16(f, n) REP4(f, n), REP4(f, (n) + 4), REP4(f, (n) + 8), REP4(f, (n) + 12)
#define REP64(f, n) REP16(f, n), REP16(f, (n) + 16), REP16(f, (n) + 32), REP16(f, (n) + 48)
#define REP256(f, n) REP64(f, n), REP64(f, (n) + 64), REP64(f, (n) + 128), REP64(f, (n) + 192)
#define REP1024(f, n) REP256(f, n), REP256(f, (n) + 256), REP256(f, (n) + 512), REP256(f, (n) + 768)
#define REP4096(f) REP1024(f, 0), REP1024(f, 1024), REP1024(f, 2048), REP1024(f, 3072)

/* The character for a 6-bit value. */
#define ENC(v)                                                                                         \
  ((v) < 26 ? 'A' + (v) : (v) < 52 ? 'a' + (v)-26 : (v) < 62 ? '0' + (v)-52 : (v) == 62 ? '+' : '/')

/* Two characters for 12 bits: the first char pair table entry is "AA", then "AB", ... */
#define PAIR(i) (char)ENC((i) >> 6), (char)ENC((i)&63)
static const char enc_pairs[8192] = {REP4096(PAIR)};
static const char enc_chars[64] = {REP16(ENC, 0), REP16(ENC, 16), REP16(ENC, 32), REP16(ENC, 48)};

/* Decoding classes above the 6-bit values. */
#define C_PAD 64
#define C_SPACE 65
#define C_BAD 66
#define IS_SPACE(c) ((c) == ' ' || ((c) >= '\t' && (c) <= '\r'))
#define DVAL(c)                                                                                        \
  ((c) >= 'A' && (c) <= 'Z'   ? (c) - 'A'                                                              \
   : (c) >= 'a' && (c) <= 'z' ? (c) - 'a' + 26                                                         \
   : (c) >= '0' && (c) <= '9' ? (c) - '0' + 52                                                         \
   : (c) == '+'               ? 62                                                                     \
   : (c) == '/'               ? 63                                                                     \
   : (c) == '='               ? C_PAD                                                                  \
   : IS_SPACE(c)              ? C_SPACE                                                                \
                              : C_BAD)
/* The cast: clang checks the conversion of every arm of DVAL, even those a character never takes. */
#define DCLASS(c) ((unsigned char)DVAL(c))
static const unsigned char dec_class[256] = {REP256(DCLASS, 0)};

/* A group's 24 bits are d0[a] | d1[b] | d2[c] | d3[d]; anything not in the alphabet sets bit 24 and up. */
#define FAST_BAD 0x01000000u
#define DSHIFT(c, s) (DVAL(c) < 64 ? (uint32_t)DVAL(c) << (s) : FAST_BAD)
#define D0(c) DSHIFT(c, 18)
#define D1(c) DSHIFT(c, 12)
#define D2(c) DSHIFT(c, 6)
#define D3(c) DSHIFT(c, 0)
static const uint32_t dec0[256] = {REP256(D0, 0)};
static const uint32_t dec1[256] = {REP256(D1, 0)};
static const uint32_t dec2[256] = {REP256(D2, 0)};
static const uint32_t dec3[256] = {REP256(D3, 0)};

/* Big-endian 64-bit load and store: one bswap'd access on little-endian GCC/Clang, bytes elsewhere. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
static inline uint64_t load_be64(const unsigned char *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return __builtin_bswap64(v);
}
static inline void store_be64(unsigned char *p, uint64_t v) {
  v = __builtin_bswap64(v);
  memcpy(p, &v, 8);
}
#else
static inline uint64_t load_be64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = v << 8 | p[i];
  return v;
}
static inline void store_be64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (56 - 8 * i));
}
#endif

/* ---- result buffers ---------------------------------------------------------------------------- */

/* From this size a result is built in its own mapping with transparent huge pages: in fresh memory the
 * faults of 4 KiB pages cost more than the encoding itself (a 48 MiB result: ~26 ms vs ~8 ms). */
#define BIG_RESULT (4u << 20)
#define HUGE_PAGE ((size_t)2 << 20)

/* A mapping owned by a userdata on the stack, so that a Lua error cannot leak it. */
typedef struct mapping {
  void *addr;
  size_t len;
} mapping;

static void mapping_release(mapping *m) {
  if (m->addr) munmap(m->addr, m->len);
  m->addr = NULL;
}

static int mapping_gc(lua_State *L) {
  mapping_release(luaL_checkudata(L, 1, MAPPING_KEY));
  return 0;
}

/* A stream object's own buffer, reused by each update: a fresh one per chunk would cost page faults. */
typedef struct scratch {
  unsigned char *p;
  size_t size;
} scratch;

static void scratch_free(scratch *s) {
  free(s->p);
  s->p = NULL;
  s->size = 0;
}

/* Where a result is written before it becomes a Lua string: a stream's scratch, a luaL_Buffer, or a
 * mapping when big. */
typedef struct outbuf {
  lua_State *L;
  luaL_Buffer lb;
  mapping *map;  /* used when not NULL */
  scratch *own;  /* used when not NULL */
  unsigned char *p;
} outbuf;

/* Room for `size` bytes, in the stream's scratch s when given and the size is not big. Whatever it
 * pushes on the stack, outbuf_push replaces by the string. */
static unsigned char *outbuf_init(lua_State *L, outbuf *o, size_t size, scratch *s) {
  o->L = L;
  o->map = NULL;
  o->own = NULL;
  if (s && size < BIG_RESULT) {
    if (s->size < size || !s->p) { /* never NULL, even for 0 bytes: callers add offsets to it */
      if (size == 0) size = 1;
      unsigned char *p = realloc(s->p, size);
      if (!p) luaL_error(L, "b64: not enough memory");
      s->p = p;
      s->size = size;
    }
    o->own = s;
    return o->p = s->p;
  }
  if (size >= BIG_RESULT && size < SIZE_MAX - HUGE_PAGE) {
    mapping *m = lua_newuserdatauv(L, sizeof *m, 0);
    m->addr = NULL;
    luaL_setmetatable(L, MAPPING_KEY);
    void *addr = mmap(NULL, size + HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (addr != MAP_FAILED) {
      m->addr = addr;
      m->len = size + HUGE_PAGE;
      o->map = m;
      o->p = (unsigned char *)(((uintptr_t)addr + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
#ifdef MADV_HUGEPAGE
      madvise(o->p, size, MADV_HUGEPAGE); /* advice only: without huge pages it still works */
#endif
      return o->p;
    }
    lua_pop(L, 1); /* no mapping: let Lua's allocator try */
  }
  return o->p = (unsigned char *)luaL_buffinitsize(L, &o->lb, size);
}

/* Replace the buffer by the string of its first len bytes. */
static void outbuf_push(outbuf *o, size_t len) {
  if (o->own) {
    lua_pushlstring(o->L, (const char *)o->p, len);
    return;
  }
  if (!o->map) {
    luaL_pushresultsize(&o->lb, len);
    return;
  }
  lua_pushlstring(o->L, (const char *)o->p, len);
  mapping_release(o->map);
  lua_remove(o->L, -2);
}

/* The result is not wanted (an error follows): give a mapping back now rather than at collection. */
static void outbuf_discard(outbuf *o) {
  if (o->map) mapping_release(o->map);
}

/* ---- encoding ---------------------------------------------------------------------------------- */

/* Encode the n / 3 whole groups of `in`; returns the number of characters written (4 per group). */
static size_t enc_groups(const unsigned char *in, size_t n, char *out) {
  char *o = out;
  size_t i = 0;
  /* 8-byte loads, 6 bytes used: 48 bits -> four 12-bit pair lookups. */
  for (; i + 8 <= n; i += 6, o += 8) {
    uint64_t x = load_be64(in + i);
    memcpy(o, enc_pairs + 2 * ((x >> 52) & 0xfff), 2);
    memcpy(o + 2, enc_pairs + 2 * ((x >> 40) & 0xfff), 2);
    memcpy(o + 4, enc_pairs + 2 * ((x >> 28) & 0xfff), 2);
    memcpy(o + 6, enc_pairs + 2 * ((x >> 16) & 0xfff), 2);
  }
  for (; i + 3 <= n; i += 3, o += 4) {
    uint32_t x = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    memcpy(o, enc_pairs + 2 * (x >> 12), 2);
    memcpy(o + 2, enc_pairs + 2 * (x & 0xfff), 2);
  }
  return (size_t)(o - out);
}

/* The padded last group of 1 or 2 bytes; writes 4 characters. */
static void enc_tail(const unsigned char *in, size_t n, char *out) {
  uint32_t x = (uint32_t)in[0] << 16 | (n > 1 ? (uint32_t)in[1] << 8 : 0);
  out[0] = enc_chars[x >> 18];
  out[1] = enc_chars[(x >> 12) & 63];
  out[2] = n > 1 ? enc_chars[(x >> 6) & 63] : '=';
  out[3] = '=';
}

/* Encoded sizes are computed in size_t: refuse what would overflow it (only possible on 32 bits). */
static void check_encodable(lua_State *L, size_t n) {
  if (n / 3 >= SIZE_MAX / 16) luaL_error(L, "b64: input of %I bytes is too large", (LUAI_UACINT)n);
}

/* core.b64_encode(s) -> string */
static int l_encode(lua_State *L) {
  size_t n;
  const unsigned char *in = (const unsigned char *)ferry_check_string(L, 1, NULL, NULL, &n);
  check_encodable(L, n);
  size_t size = (n + 2) / 3 * 4;
  outbuf o;
  char *out = (char *)outbuf_init(L, &o, size, NULL);
  size_t w = enc_groups(in, n, out);
  if (n % 3) enc_tail(in + n - n % 3, n % 3, out + w);
  outbuf_push(&o, size);
  return 1;
}

/* ---- streaming encoder ------------------------------------------------------------------------- */

typedef struct encoder {
  unsigned char carry[3]; /* input bytes of an incomplete group */
  size_t ncarry;
  int finished;
  size_t wrap;   /* line length, 0: one line */
  size_t column; /* characters on the current output line */
  scratch out;
} encoder;

static encoder *check_encoder(lua_State *L) {
  encoder *e = luaL_checkudata(L, 1, ENCODER_KEY);
  if (e->finished) luaL_error(L, "b64 encoder: used after finish()");
  return e;
}

/* Bytes that `chars` more characters take with e's line breaks. */
static size_t wrapped_size(const encoder *e, size_t chars) {
  return chars + (e->wrap ? (e->column + chars) / e->wrap : 0);
}

/* Copy characters to out, ending a line every e->wrap characters; returns the bytes written. */
static size_t put_wrapped(encoder *e, char *out, const char *s, size_t n) {
  char *o = out;
  while (n > 0) {
    size_t room = e->wrap - e->column, k = n < room ? n : room;
    memcpy(o, s, k);
    o += k, s += k, n -= k, e->column += k;
    if (e->column == e->wrap) {
      *o++ = '\n';
      e->column = 0;
    }
  }
  return (size_t)(o - out);
}

/* Encode the whole groups of in[0..n) to out with e's line breaks; returns the bytes written. */
static size_t enc_emit(encoder *e, const unsigned char *in, size_t n, char *out) {
  if (e->wrap == 0) return enc_groups(in, n, out);
  char block[4096];
  size_t w = 0;
  for (size_t i = 0; i + 3 <= n;) {
    size_t take = n - i < 3072 ? (n - i) / 3 * 3 : 3072;
    w += put_wrapped(e, out + w, block, enc_groups(in + i, take, block));
    i += take;
  }
  return w;
}

/* encoder:update(chunk) -> the encoding of the complete groups so far (the rest waits for more) */
static int enc_update(lua_State *L) {
  encoder *e = check_encoder(L);
  size_t n;
  const unsigned char *in = (const unsigned char *)ferry_check_string(L, 2, NULL, NULL, &n);
  check_encodable(L, n);
  size_t total = e->ncarry + n;
  outbuf o;
  char *out = (char *)outbuf_init(L, &o, wrapped_size(e, total / 3 * 4), &e->out);
  size_t w = 0;
  if (e->ncarry > 0 && total >= 3) { /* complete the carried group with the chunk's first bytes */
    size_t k = 3 - e->ncarry;
    memcpy(e->carry + e->ncarry, in, k);
    in += k, n -= k;
    w += enc_emit(e, e->carry, 3, out);
    e->ncarry = 0;
  }
  if (e->ncarry == 0) {
    size_t whole = n / 3 * 3;
    w += enc_emit(e, in, whole, out + w);
    in += whole, n -= whole;
  }
  memcpy(e->carry + e->ncarry, in, n);
  e->ncarry += n;
  outbuf_push(&o, w);
  return 1;
}

/* encoder:finish() -> the padded last group (and the final newline when wrapping) */
static int enc_finish(lua_State *L) {
  encoder *e = check_encoder(L);
  char tail[4], out[16]; /* 4 characters, a newline after each when wrap = 1, a final newline */
  size_t w = 0;
  if (e->ncarry > 0) {
    enc_tail(e->carry, e->ncarry, tail);
    w = e->wrap ? put_wrapped(e, out, tail, 4) : (memcpy(out, tail, 4), 4);
  }
  if (e->wrap && e->column > 0) out[w++] = '\n';
  e->finished = 1;
  scratch_free(&e->out);
  lua_pushlstring(L, out, w);
  return 1;
}

static int enc_gc(lua_State *L) {
  scratch_free(&((encoder *)luaL_checkudata(L, 1, ENCODER_KEY))->out);
  return 0;
}

/* core.b64_encoder([{wrap = N}]) -> encoder; wrap: line length of the output, 0 (default): one line */
static int l_encoder(lua_State *L) {
  size_t wrap = 0;
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TTABLE);
    if (lua_getfield(L, 1, "wrap") != LUA_TNIL) {
      int isint;
      lua_Integer w = lua_tointegerx(L, -1, &isint);
      luaL_argcheck(L, isint && w >= 0, 1, "wrap must be an integer >= 0");
      wrap = (size_t)w;
    }
    lua_pop(L, 1);
  }
  encoder *e = lua_newuserdatauv(L, sizeof *e, 0);
  memset(e, 0, sizeof *e);
  e->wrap = wrap;
  luaL_setmetatable(L, ENCODER_KEY);
  return 1;
}

/* ---- decoding ---------------------------------------------------------------------------------- */

/* Decoding state, carried across the chunks of a stream. */
typedef struct decoder {
  unsigned char group[4]; /* 6-bit values of the current group's characters */
  int n;                  /* characters of the current group seen (padding included) */
  int pad;                /* '=' among them */
  int ended;              /* a padded group closed the data: only whitespace may follow */
  int finished;
  int failed;      /* sticky: the stream had an error at offset `bad` */
  uint64_t offset; /* input bytes consumed by earlier chunks */
  uint64_t bad;
  scratch out;
} decoder;

/* Room for decoding n more input characters: 3 bytes per group, plus the 8-byte stores' overrun. */
static size_t dec_room(size_t n) { return n / 4 * 3 + 3 + 8; }

/* Decode whole 4-character groups without whitespace or padding while they last; returns the input
 * consumed (a multiple of 4) and adds the bytes written to *w. */
static size_t dec_fast(const unsigned char *in, size_t n, unsigned char *out, size_t *w) {
  size_t i = 0;
  unsigned char *o = out + *w;
  /* Two groups per step; a 64-bit store writes 6 bytes and 2 that the next step overwrites. */
  for (; i + 8 <= n; i += 8, o += 6) {
    uint32_t x = dec0[in[i]] | dec1[in[i + 1]] | dec2[in[i + 2]] | dec3[in[i + 3]];
    uint32_t y = dec0[in[i + 4]] | dec1[in[i + 5]] | dec2[in[i + 6]] | dec3[in[i + 7]];
    if ((x | y) & ~0xffffffu) break;
    store_be64(o, (uint64_t)x << 40 | (uint64_t)y << 16);
  }
  for (; i + 4 <= n; i += 4, o += 3) {
    uint32_t x = dec0[in[i]] | dec1[in[i + 1]] | dec2[in[i + 2]] | dec3[in[i + 3]];
    if (x & ~0xffffffu) break;
    o[0] = (unsigned char)(x >> 16), o[1] = (unsigned char)(x >> 8), o[2] = (unsigned char)x;
  }
  *w = (size_t)(o - out);
  return i;
}

/* Decode in[0..n) into out (dec_room(n + d->n) bytes), continuing d's group. Returns 0 and sets *w
 * to the bytes written, or -1 with d->failed set and d->bad the stream offset of the first bad byte. */
static int dec_run(decoder *d, const unsigned char *in, size_t n, unsigned char *out, size_t *w) {
  size_t i = 0;
  *w = 0;
  while (i < n) {
    if (d->n == 0 && !d->ended) i += dec_fast(in + i, n - i, out, w);
    if (i >= n) break;
    int c = dec_class[in[i]];
    if (c == C_SPACE) {
      i++;
      continue;
    }
    /* After padding only more padding of the same group may come; '=' is allowed in places 3 and 4. */
    if (c == C_BAD || d->ended || (c < 64 && d->pad > 0) || (c == C_PAD && d->n < 2)) {
      d->failed = 1;
      d->bad = d->offset + i;
      return -1;
    }
    if (c == C_PAD) d->pad++;
    d->group[d->n++] = c == C_PAD ? 0 : (unsigned char)c;
    i++;
    if (d->n == 4) {
      const unsigned char *g = d->group;
      uint32_t x = (uint32_t)g[0] << 18 | (uint32_t)g[1] << 12 | (uint32_t)g[2] << 6 | g[3];
      unsigned char *o = out + *w;
      o[0] = (unsigned char)(x >> 16), o[1] = (unsigned char)(x >> 8), o[2] = (unsigned char)x;
      *w += 3 - (size_t)d->pad;
      d->ended = d->pad > 0;
      d->n = d->pad = 0;
    }
  }
  d->offset += n;
  return 0;
}

/* At the end of the input a group must be complete. */
static int dec_end(decoder *d) {
  if (d->failed) return -1;
  if (d->n == 0) return 0;
  d->failed = 1;
  d->bad = d->offset;
  return -1;
}

static int dec_fail(lua_State *L, const decoder *d) {
  return ferry_fail(L, "EINVAL", "invalid base64 at offset %I", (LUAI_UACINT)d->bad);
}

/* core.b64_decode(s) -> string | nil, "invalid base64 at offset N", "EINVAL" */
static int l_decode(lua_State *L) {
  size_t n, w;
  const unsigned char *in = (const unsigned char *)ferry_check_string(L, 1, NULL, NULL, &n);
  decoder d;
  memset(&d, 0, sizeof d);
  outbuf o;
  unsigned char *out = outbuf_init(L, &o, dec_room(n), NULL);
  if (dec_run(&d, in, n, out, &w) < 0 || dec_end(&d) < 0) {
    outbuf_discard(&o);
    return dec_fail(L, &d);
  }
  outbuf_push(&o, w);
  return 1;
}

/* ---- streaming decoder ------------------------------------------------------------------------- */

static decoder *check_decoder(lua_State *L) {
  decoder *d = luaL_checkudata(L, 1, DECODER_KEY);
  if (d->finished) luaL_error(L, "b64 decoder: used after finish()");
  return d;
}

/* decoder:update(chunk) -> bytes | nil, "invalid base64 at offset N", "EINVAL" (offset in the stream) */
static int dec_update(lua_State *L) {
  decoder *d = check_decoder(L);
  size_t n, w;
  const unsigned char *in = (const unsigned char *)ferry_check_string(L, 2, NULL, NULL, &n);
  if (d->failed) return dec_fail(L, d);
  outbuf o;
  unsigned char *out = outbuf_init(L, &o, dec_room(n) + 3, &d->out); /* + the carried group */
  if (dec_run(d, in, n, out, &w) < 0) {
    outbuf_discard(&o);
    return dec_fail(L, d);
  }
  outbuf_push(&o, w);
  return 1;
}

/* decoder:finish() -> "" | nil, "invalid base64 at offset N", "EINVAL" (N: the stream's length when it
 * ended inside a group) */
static int dec_finish(lua_State *L) {
  decoder *d = check_decoder(L);
  d->finished = 1;
  scratch_free(&d->out);
  if (dec_end(d) < 0) return dec_fail(L, d);
  lua_pushliteral(L, "");
  return 1;
}

static int dec_gc(lua_State *L) {
  scratch_free(&((decoder *)luaL_checkudata(L, 1, DECODER_KEY))->out);
  return 0;
}

/* core.b64_decoder() -> decoder */
static int l_decoder(lua_State *L) {
  decoder *d = lua_newuserdatauv(L, sizeof *d, 0);
  memset(d, 0, sizeof *d);
  luaL_setmetatable(L, DECODER_KEY);
  return 1;
}

/* ---- registration ------------------------------------------------------------------------------ */

void ferry_open_b64(lua_State *L) {
  static const luaL_Reg enc_methods[] = {{"update", enc_update}, {"finish", enc_finish}, {NULL, NULL}};
  static const luaL_Reg dec_methods[] = {{"update", dec_update}, {"finish", dec_finish}, {NULL, NULL}};
  static const luaL_Reg fns[] = {{"b64_encode", l_encode},
                                 {"b64_decode", l_decode},
                                 {"b64_encoder", l_encoder},
                                 {"b64_decoder", l_decoder},
                                 {NULL, NULL}};
  static const luaL_Reg enc_meta[] = {{"__gc", enc_gc}, {NULL, NULL}};
  static const luaL_Reg dec_meta[] = {{"__gc", dec_gc}, {NULL, NULL}};
  static const luaL_Reg mapping_meta[] = {{"__gc", mapping_gc}, {NULL, NULL}};
  ferry_new_class(L, ENCODER_KEY, enc_meta, enc_methods);
  ferry_new_class(L, DECODER_KEY, dec_meta, dec_methods);
  ferry_new_class(L, MAPPING_KEY, mapping_meta, NULL);
  luaL_setfuncs(L, fns, 0);
}
