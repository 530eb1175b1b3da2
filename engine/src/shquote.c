/* POSIX shell quoting: turn bytes into one shell word that any POSIX sh reads back unchanged.
 *
 * core.sh_quote(s) -> word      safe strings stay bare, the rest become '...' with ' written as '\''
 * core.sh_join(argv) -> words   each element quoted, separated by single spaces; {} gives ""
 *
 * Inside single quotes every byte but ' is literal in every POSIX shell, whatever the locale, so this holds
 * for arbitrary bytes except NUL, which no argument can carry: a NUL raises an error instead of truncating.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* Bytes that never mean anything to the shell as part of an unquoted word. '=' is left out because a bare
 * `a=b` in command position is an assignment, '~' because a leading one expands to a home dir. */
static int is_safe(unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return 1;
  return c != '\0' && strchr("_./:,+@%-", c) != NULL;
}

/* Push the quoted form of s[0..len). On a NUL byte, raise `what` followed by " contains a NUL byte". */
static void push_quoted(lua_State *L, const char *s, size_t len, const char *what) {
  size_t quotes = 0;
  int bare = len > 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '\0') luaL_error(L, "%s contains a NUL byte", what);
    if (c == '\'') quotes++;
    if (!is_safe(c)) bare = 0;
  }
  if (bare) {
    lua_pushlstring(L, s, len);
    return;
  }
  luaL_Buffer b;
  size_t size = len + 2 + 3 * quotes; /* each ' becomes '\'' : four bytes instead of one */
  char *out = luaL_buffinitsize(L, &b, size);
  size_t n = 0;
  out[n++] = '\'';
  for (size_t i = 0; i < len; i++) {
    if (s[i] == '\'') {
      memcpy(out + n, "'\\''", 4);
      n += 4;
    } else {
      out[n++] = s[i];
    }
  }
  out[n++] = '\'';
  luaL_pushresultsize(&b, n);
}

static int l_sh_quote(lua_State *L) {
  size_t len;
  const char *s = ferry_check_string(L, 1, "sh.quote", "s", &len);
  push_quoted(L, s, len, "sh.quote: string");
  return 1;
}

/* argv must be a sequence 1..n and nothing else: a stray key would silently vanish from the command line. */
static lua_Integer check_list(lua_State *L) {
  if (lua_type(L, 1) != LUA_TTABLE)
    return luaL_error(L, "sh.join: argv must be a list of strings, got %s", luaL_typename(L, 1));
  lua_Integer n = (lua_Integer)lua_rawlen(L, 1), count = 0;
  lua_pushnil(L);
  while (lua_next(L, 1) != 0) {
    lua_pop(L, 1);
    count++;
  }
  if (count != n) return luaL_error(L, "sh.join: argv must be a list of strings (keys 1..n only)");
  for (lua_Integer i = 1; i <= n; i++) {
    int t = lua_rawgeti(L, 1, i);
    if (t != LUA_TSTRING)
      return luaL_error(L, "sh.join: argv[%I] must be a string, got %s", i, lua_typename(L, t));
    lua_pop(L, 1);
  }
  return n;
}

static int l_sh_join(lua_State *L) {
  lua_Integer n = check_list(L);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (lua_Integer i = 1; i <= n; i++) {
    if (i > 1) luaL_addchar(&b, ' ');
    lua_rawgeti(L, 1, i);
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    char what[64];
    snprintf(what, sizeof what, "sh.join: argv[%lld]", (long long)i);
    push_quoted(L, s, len, what);
    lua_remove(L, -2);   /* the element: luaL_addvalue wants exactly one extra value on the stack */
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  return 1;
}

void ferry_open_sh(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"sh_quote", l_sh_quote},
      {"sh_join", l_sh_join},
      {NULL, NULL},
  };
  luaL_setfuncs(L, fns, 0);
}
