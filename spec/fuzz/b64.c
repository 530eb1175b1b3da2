/* Fuzz target: the base64 codec of engine/src/base64.c, through the functions Lua calls (core.b64_decode,
 * core.b64_decoder, core.b64_encode, core.b64_encoder), compared with a plain byte-at-a-time reference
 * written from the README ("ferry.b64"):
 *   - one-shot decode gives the reference's bytes, or nil, "invalid base64 at offset N", "EINVAL" with the
 *     reference's N (first bad byte; the input length when it ends inside a group);
 *   - the streaming decoder, fed the input in pieces, gives the same bytes or the same error (at the update
 *     that meets it, or at finish when the input is cut short), and stays failed afterwards;
 *   - encode and the streaming encoder (pieces, a line length) give the reference's text (`base64 -w N`:
 *     a newline every N characters and at the end), and decoding that gives the input back.
 * Input: a chunking byte, a line-length byte (0: one line), then the data. Any difference aborts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

int luaopen_ferry_core(lua_State *L);

static lua_State *L;
static const char ALPHABET[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void fail(const char *what, const uint8_t *data, size_t size) {
  fprintf(stderr, "ferry-fuzz b64: FINDING: %s (input of %zu bytes)\n", what, size);
  (void)data;
  abort();
}

/* ---- reference ---------------------------------------------------------------------------------- */

static int value_of(int c) {
  const char *p = c ? strchr(ALPHABET, c) : NULL;
  if (p) return (int)(p - ALPHABET);
  if (c == '=') return 64;
  if (c == ' ' || (c >= '\t' && c <= '\r')) return 65;
  return -1;
}

/* 0 with the bytes in out (*len), or -1 with *bad the offset of the first bad byte. */
static int ref_decode(const uint8_t *in, size_t n, uint8_t *out, size_t *len, size_t *bad) {
  int group[4], count = 0, pad = 0, ended = 0;
  size_t w = 0;
  for (size_t i = 0; i < n; i++) {
    int v = value_of(in[i]);
    if (v == 65) continue;
    if (v < 0 || ended || (v < 64 && pad) || (v == 64 && count < 2)) {
      *bad = i;
      return -1;
    }
    if (v == 64) pad++;
    group[count++] = v == 64 ? 0 : v;
    if (count == 4) {
      uint32_t x = (uint32_t)group[0] << 18 | (uint32_t)group[1] << 12 | (uint32_t)group[2] << 6 | (uint32_t)group[3];
      uint8_t bytes[3] = {(uint8_t)(x >> 16), (uint8_t)(x >> 8), (uint8_t)x};
      memcpy(out + w, bytes, (size_t)(3 - pad));
      w += (size_t)(3 - pad);
      ended = pad > 0;
      count = pad = 0;
    }
  }
  if (count) {
    *bad = n;
    return -1;
  }
  *len = w;
  return 0;
}

/* The encoding of in, a newline after every `wrap` characters and at the end when wrap > 0. */
static size_t ref_encode(const uint8_t *in, size_t n, size_t wrap, char *out) {
  size_t w = 0, column = 0;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t x = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
    char group[4] = {ALPHABET[x >> 18], ALPHABET[(x >> 12) & 63], i + 1 < n ? ALPHABET[(x >> 6) & 63] : '=',
                     i + 2 < n ? ALPHABET[x & 63] : '='};
    for (int k = 0; k < 4; k++) {
      out[w++] = group[k];
      if (wrap && ++column == wrap) out[w++] = '\n', column = 0;
    }
  }
  if (wrap && column) out[w++] = '\n';
  return w;
}

/* ---- the codec through Lua ---------------------------------------------------------------------- */

/* Call core[fn] with the string; leaves its results on the stack, returns how many. */
static int call_core(const char *fn, const uint8_t *s, size_t n) {
  int top = lua_gettop(L);
  lua_getfield(L, LUA_REGISTRYINDEX, "fuzz.core");
  lua_getfield(L, -1, fn);
  lua_remove(L, -2);
  lua_pushlstring(L, (const char *)s, n);
  if (lua_pcall(L, 1, LUA_MULTRET, 0) != LUA_OK) {
    fprintf(stderr, "%s raised: %s\n", fn, lua_tostring(L, -1));
    abort();
  }
  return lua_gettop(L) - top;
}

/* Call method `m` of the object at index obj with an optional string; results on the stack. */
static int call_method(int obj, const char *m, const uint8_t *s, size_t n, int with_arg) {
  int top = lua_gettop(L);
  lua_getfield(L, obj, m);
  lua_pushvalue(L, obj);
  if (with_arg) lua_pushlstring(L, (const char *)s, n);
  if (lua_pcall(L, with_arg ? 2 : 1, LUA_MULTRET, 0) != LUA_OK) {
    fprintf(stderr, "%s raised: %s\n", m, lua_tostring(L, -1));
    abort();
  }
  return lua_gettop(L) - top;
}

/* Is the failure on top of the stack (nil, msg, code) the one at `offset`? Pops it. */
static int is_failure_at(int nres, size_t offset) {
  char want[64];
  snprintf(want, sizeof want, "invalid base64 at offset %zu", offset);
  int ok = nres == 3 && lua_isnil(L, -3) && lua_type(L, -2) == LUA_TSTRING && strcmp(lua_tostring(L, -2), want) == 0 &&
           lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "EINVAL") == 0;
  lua_pop(L, nres);
  return ok;
}

/* Piece sizes from the chunking byte: 0: one piece; else 1..seed bytes in a fixed sequence. */
static size_t next_piece(uint32_t *x, unsigned seed, size_t left) {
  if (seed == 0) return left;
  *x = *x * 1103515245u + 12345u;
  size_t n = 1 + (*x >> 8) % seed;
  return n < left ? n : left;
}

static void check_decode(const uint8_t *in, size_t n, unsigned seed, const uint8_t *data, size_t size) {
  uint8_t *want = malloc(n / 4 * 3 + 3);
  size_t want_len = 0, bad = 0;
  int ref = ref_decode(in, n, want, &want_len, &bad);

  int nres = call_core("b64_decode", in, n);
  if (ref == 0) {
    size_t got_len;
    const char *got = lua_tolstring(L, -nres, &got_len);
    if (nres != 1 || !got || got_len != want_len || memcmp(got, want, want_len) != 0)
      fail("decode differs from the reference", data, size);
    lua_pop(L, nres);
  } else if (!is_failure_at(nres, bad)) {
    fail("decode does not fail at the reference's offset", data, size);
  }

  /* streaming */
  lua_getfield(L, LUA_REGISTRYINDEX, "fuzz.core");
  lua_getfield(L, -1, "b64_decoder");
  lua_remove(L, -2);
  lua_call(L, 0, 1);
  int dec = lua_gettop(L);
  size_t got_total = 0, pos = 0, cap = n / 4 * 3 + 3;
  uint32_t x = seed;
  int failed = 0;
  uint8_t *got = malloc(cap);
  while (pos < n && !failed) {
    size_t k = next_piece(&x, seed, n - pos);
    nres = call_method(dec, "update", in + pos, k, 1);
    if (nres == 1 && lua_type(L, -1) == LUA_TSTRING) {
      size_t len;
      const char *s = lua_tolstring(L, -1, &len);
      if (got_total + len > cap) fail("the stream decoded more bytes than the input holds", data, size);
      memcpy(got + got_total, s, len);
      got_total += len;
      lua_pop(L, 1);
    } else {
      if (ref == 0 || bad >= n || bad < pos || bad >= pos + k || !is_failure_at(nres, bad))
        fail("a streaming update fails where the reference does not", data, size);
      failed = 1;
      nres = call_method(dec, "update", (const uint8_t *)"QUJD", 4, 1); /* sticky */
      if (!is_failure_at(nres, bad)) fail("the decoder forgot its error", data, size);
    }
    pos += k;
  }
  nres = call_method(dec, "finish", NULL, 0, 0);
  if (ref == 0) {
    if (nres != 1 || lua_type(L, -1) != LUA_TSTRING || lua_rawlen(L, -1) != 0) fail("finish fails", data, size);
    lua_pop(L, 1);
    if (got_total != want_len || memcmp(got, want, want_len) != 0) fail("stream differs from one-shot", data, size);
  } else {
    if (!failed && bad != n) fail("the stream missed a bad byte", data, size);
    if (!is_failure_at(nres, bad)) fail("finish does not report the error", data, size);
  }
  lua_settop(L, dec - 1);
  free(got);
  free(want);
}

static void check_encode(const uint8_t *in, size_t n, unsigned seed, size_t wrap, const uint8_t *data, size_t size) {
  char *want = malloc(n / 3 * 4 + 4 + (n / 3 * 4 + 4) + 2);
  size_t want_len = ref_encode(in, n, 0, want);
  int nres = call_core("b64_encode", in, n);
  size_t len;
  const char *s = lua_tolstring(L, -1, &len);
  if (nres != 1 || !s || len != want_len || memcmp(s, want, len) != 0) fail("encode differs", data, size);
  nres = call_core("b64_decode", (const uint8_t *)s, len);
  const char *back = lua_tolstring(L, -1, &len);
  if (nres != 1 || !back || len != n || memcmp(back, in, n) != 0) fail("decode(encode(x)) is not x", data, size);
  lua_pop(L, 2);

  want_len = ref_encode(in, n, wrap, want);
  lua_getfield(L, LUA_REGISTRYINDEX, "fuzz.core");
  lua_getfield(L, -1, "b64_encoder");
  lua_remove(L, -2);
  lua_createtable(L, 0, 1);
  lua_pushinteger(L, (lua_Integer)wrap);
  lua_setfield(L, -2, "wrap");
  lua_call(L, 1, 1);
  int enc = lua_gettop(L);
  char *got = malloc(want_len + 1);
  size_t got_len = 0, pos = 0;
  uint32_t x = seed ^ 0x5a;
  do {
    size_t k = next_piece(&x, seed, n - pos);
    nres = call_method(enc, "update", in + pos, k, 1);
    s = lua_tolstring(L, -1, &len);
    if (nres != 1 || !s || got_len + len > want_len) fail("encoder update", data, size);
    memcpy(got + got_len, s, len);
    got_len += len;
    lua_pop(L, 1);
    pos += k;
  } while (pos < n);
  nres = call_method(enc, "finish", NULL, 0, 0);
  s = lua_tolstring(L, -1, &len);
  if (nres != 1 || !s || got_len + len != want_len) fail("encoder finish", data, size);
  memcpy(got + got_len, s, len);
  if (memcmp(got, want, want_len) != 0) fail("streaming encoder differs from base64 -w", data, size);
  lua_settop(L, enc - 1);
  free(got);
  free(want);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  L = luaL_newstate();
  luaL_openlibs(L);
  luaL_requiref(L, "ferry.core", luaopen_ferry_core, 0);
  lua_setfield(L, LUA_REGISTRYINDEX, "fuzz.core");
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  unsigned seed = data[0];
  size_t wrap = data[1] % 80;
  check_decode(data + 2, size - 2, seed, data, size);
  check_encode(data + 2, size - 2, seed, wrap, data, size);
  lua_settop(L, 0);
  lua_gc(L, LUA_GCCOLLECT, 0); /* the input's strings freed now: libFuzzer's leak check stays on */
  return 0;
}
