/* SHA-256 through libcrypto's EVP interface.
 *
 * core.sha256(s) -> lowercase hex
 * core.sha256_new() -> hasher     hasher:update(s) -> hasher; hasher:hexdigest() / hasher:digest() (32 bytes)
 *                                 after a digest the hasher is finished: update raises, digests repeat
 * core.sha256_file(path) -> hex | nil, "sha256 <path>: <reason>", code    (reads 64 KiB at a time)
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>

#include "internal.h"

#define HASHER_MT "ferry.sha256"
#define FILE_BLOCK (64 * 1024)

typedef struct hasher {
  EVP_MD_CTX *ctx; /* NULL once finished or closed */
  int finished;
  unsigned char md[FERRY_SHA256_LEN];
} hasher;

/* Raise "sha256: <what>: <OpenSSL's reason>" and leave OpenSSL's error queue empty. */
static int ssl_error(lua_State *L, const char *what) {
  char reason[256] = "unknown error";
  unsigned long e = ERR_get_error();
  if (e != 0) ERR_error_string_n(e, reason, sizeof reason);
  ERR_clear_error();
  return luaL_error(L, "sha256: %s: %s", what, reason);
}

static void push_hex(lua_State *L, const unsigned char *md) {
  char hex[2 * FERRY_SHA256_LEN + 1];
  ferry_hex(md, FERRY_SHA256_LEN, hex);
  lua_pushlstring(L, hex, 2 * FERRY_SHA256_LEN);
}

static int l_sha256(lua_State *L) {
  size_t len;
  const char *s = ferry_check_string(L, 1, "sha256", "s", &len);
  unsigned char md[FERRY_SHA256_LEN];
  if (!EVP_Digest(s, len, md, NULL, EVP_sha256(), NULL)) return ssl_error(L, "digest");
  push_hex(L, md);
  return 1;
}

/* Push a new hasher (freed by __gc even if a later step raises). */
static hasher *new_hasher(lua_State *L) {
  hasher *h = lua_newuserdatauv(L, sizeof *h, 0);
  h->ctx = NULL;
  h->finished = 0;
  luaL_setmetatable(L, HASHER_MT);
  h->ctx = EVP_MD_CTX_new();
  if (h->ctx == NULL) ssl_error(L, "cannot allocate a digest context");
  if (!EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL)) ssl_error(L, "init");
  return h;
}

static int l_sha256_new(lua_State *L) {
  new_hasher(L);
  return 1;
}

static hasher *check_hasher(lua_State *L, const char *method) {
  hasher *h = luaL_testudata(L, 1, HASHER_MT);
  if (h == NULL)
    luaL_error(L, "sha256: %s: expected a hasher (use hasher:%s), got %s", method, method, luaL_typename(L, 1));
  return h;
}

static void free_ctx(hasher *h) {
  EVP_MD_CTX_free(h->ctx);
  h->ctx = NULL;
}

static int l_update(lua_State *L) {
  hasher *h = check_hasher(L, "update");
  size_t len;
  const char *s = ferry_check_string(L, 2, "sha256: update", "s", &len);
  if (h->finished) return luaL_error(L, "sha256: update after digest (the hasher is finished)");
  if (h->ctx == NULL) return luaL_error(L, "sha256: update on a closed hasher");
  if (!EVP_DigestUpdate(h->ctx, s, len)) return ssl_error(L, "update");
  lua_settop(L, 1);
  return 1;
}

/* Finish once; later digests return the same bytes. */
static const unsigned char *finish(lua_State *L, hasher *h) {
  if (h->finished) return h->md;
  if (h->ctx == NULL) luaL_error(L, "sha256: digest of a closed hasher");
  if (!EVP_DigestFinal_ex(h->ctx, h->md, NULL)) ssl_error(L, "final");
  h->finished = 1;
  free_ctx(h);
  return h->md;
}

static int l_hexdigest(lua_State *L) {
  push_hex(L, finish(L, check_hasher(L, "hexdigest")));
  return 1;
}

static int l_digest(lua_State *L) {
  lua_pushlstring(L, (const char *)finish(L, check_hasher(L, "digest")), FERRY_SHA256_LEN);
  return 1;
}

static int l_free(lua_State *L) {
  free_ctx(luaL_checkudata(L, 1, HASHER_MT));
  return 0;
}

static int l_tostring(lua_State *L) {
  hasher *h = luaL_checkudata(L, 1, HASHER_MT);
  lua_pushfstring(L, "sha256 hasher (%s)", h->finished ? "finished" : h->ctx ? "open" : "closed");
  return 1;
}

static int l_sha256_file(lua_State *L) {
  const char *path = ferry_check_path(L, 1, "sha256_file", "path", NULL);
  hasher *h = new_hasher(L);
  int fd;
  do fd = open(path, O_RDONLY | O_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) return ferry_sys_fail(L, errno, "sha256", path);
  unsigned char *block = lua_newuserdatauv(L, FILE_BLOCK, 0); /* not on the C stack: hosts may run small stacks */
  for (;;) {
    ssize_t n = read(fd, block, FILE_BLOCK);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      close(fd);
      return ferry_sys_fail(L, err, "sha256", path);
    }
    if (n == 0) break;
    if (!EVP_DigestUpdate(h->ctx, block, (size_t)n)) {
      close(fd);
      return ssl_error(L, "update");
    }
  }
  close(fd);
  push_hex(L, finish(L, h));
  return 1;
}

void ferry_open_hash(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"update", l_update},
      {"hexdigest", l_hexdigest},
      {"digest", l_digest},
      {NULL, NULL},
  };
  static const luaL_Reg meta[] = {
      {"__gc", l_free},
      {"__close", l_free},
      {"__tostring", l_tostring},
      {NULL, NULL},
  };
  static const luaL_Reg fns[] = {
      {"sha256", l_sha256},
      {"sha256_new", l_sha256_new},
      {"sha256_file", l_sha256_file},
      {NULL, NULL},
  };
  ferry_new_class(L, HASHER_MT, meta, methods);
  luaL_setfuncs(L, fns, 0);
}
