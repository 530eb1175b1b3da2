/* HMAC-SHA256, constant-time comparison and random bytes through libcrypto (the bridge's signatures).
 *
 * core.hmac_sha256(key, s1 [, s2, ...]) -> 32 raw bytes: the MAC of the concatenation of the strings (no copy)
 * core.hmac_equal(a, b) -> boolean    CRYPTO_memcmp: the time taken does not depend on where a and b differ
 * core.random_bytes(n) -> n bytes from the OS's CSPRNG (RAND_bytes), 1 <= n <= 4096
 */
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "internal.h"

#define MAC_LEN 32
#define MAX_RANDOM 4096

/* Raise "<fn>: <what>: <OpenSSL's reason>" and leave OpenSSL's error queue empty. */
static int crypto_error(lua_State *L, const char *fn, const char *what) {
  char reason[256] = "unknown error";
  unsigned long e = ERR_get_error();
  if (e != 0) ERR_error_string_n(e, reason, sizeof reason);
  ERR_clear_error();
  return luaL_error(L, "%s: %s: %s", fn, what, reason);
}

static const char *arg_string(lua_State *L, int idx, const char *fn, const char *name, size_t *len) {
  if (lua_type(L, idx) != LUA_TSTRING)
    luaL_error(L, "%s: %s must be a string, got %s", fn, name, luaL_typename(L, idx));
  return lua_tolstring(L, idx, len);
}

static int l_hmac_sha256(lua_State *L) {
  size_t klen;
  const char *key = arg_string(L, 1, "hmac_sha256", "key", &klen);
  if (klen == 0) return luaL_error(L, "hmac_sha256: key must not be empty");
  int n = lua_gettop(L);
  if (n < 2) return luaL_error(L, "hmac_sha256: expected the key and at least one string");
  for (int i = 2; i <= n; i++) {
    if (lua_type(L, i) != LUA_TSTRING)
      return luaL_error(L, "hmac_sha256: argument #%d must be a string, got %s", i, luaL_typename(L, i));
  }
  static EVP_MAC *hmac; /* fetched once: the lookup costs more than a short MAC */
  if (!hmac && !(hmac = EVP_MAC_fetch(NULL, "HMAC", NULL))) return crypto_error(L, "hmac_sha256", "fetch");
  EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(hmac);
  if (!ctx) return crypto_error(L, "hmac_sha256", "new");
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
                         OSSL_PARAM_construct_end()};
  int ok = EVP_MAC_init(ctx, (const unsigned char *)key, klen, params);
  for (int i = 2; ok && i <= n; i++) {
    size_t len;
    const char *s = lua_tolstring(L, i, &len);
    ok = EVP_MAC_update(ctx, (const unsigned char *)s, len);
  }
  unsigned char mac[MAC_LEN];
  size_t maclen = 0;
  if (ok) ok = EVP_MAC_final(ctx, mac, &maclen, sizeof mac);
  EVP_MAC_CTX_free(ctx);
  if (!ok || maclen != MAC_LEN) return crypto_error(L, "hmac_sha256", "digest");
  lua_pushlstring(L, (const char *)mac, MAC_LEN);
  return 1;
}

static int l_hmac_equal(lua_State *L) {
  size_t alen, blen;
  const char *a = arg_string(L, 1, "hmac_equal", "a", &alen);
  const char *b = arg_string(L, 2, "hmac_equal", "b", &blen);
  /* the length of a MAC is public; only its bytes are compared in constant time */
  lua_pushboolean(L, alen == blen && CRYPTO_memcmp(a, b, alen) == 0);
  return 1;
}

static int l_random_bytes(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  if (n < 1 || n > MAX_RANDOM) return luaL_error(L, "random_bytes: n must be between 1 and %d", MAX_RANDOM);
  unsigned char buf[MAX_RANDOM];
  if (RAND_bytes(buf, (int)n) != 1) return crypto_error(L, "random_bytes", "RAND_bytes");
  lua_pushlstring(L, (const char *)buf, (size_t)n);
  return 1;
}

void ferry_open_hmac(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"hmac_sha256", l_hmac_sha256}, {"hmac_equal", l_hmac_equal}, {"random_bytes", l_random_bytes}, {NULL, NULL}};
  luaL_setfuncs(L, fns, 0);
}
