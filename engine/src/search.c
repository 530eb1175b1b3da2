/* Where a user's Lua files override the built-in ones (README "Overriding Lua files: FERRY_PATH"): each
 * directory of FERRY_PATH (';'-separated, empty entries skipped), then the user's config dir
 * ($XDG_CONFIG_HOME/ferry, else ~/.config/ferry). This is the one definition of that order: engine.c's module
 * searcher walks it for `require "ferry..."`, scripts/ferry/policy.lua for adapters and providers.
 *
 * core.search_dirs() -> {{dir = "/path", from = "FERRY_PATH" | "config"}, ...}   read from the environment
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Append {dir = dir[0, len), from = from} to the list at index `list`. */
static void add_dir(lua_State *L, int list, const char *dir, size_t len, const char *from) {
  lua_createtable(L, 0, 2);
  lua_pushlstring(L, dir, len);
  lua_setfield(L, -2, "dir");
  lua_pushstring(L, from);
  lua_setfield(L, -2, "from");
  lua_rawseti(L, list, (lua_Integer)lua_rawlen(L, list) + 1);
}

void ferry_push_search_dirs(lua_State *L) {
  lua_newtable(L);
  int list = lua_gettop(L);
  const char *path = getenv("FERRY_PATH");
  while (path && *path) {
    size_t len = strcspn(path, ";");
    if (len > 0) add_dir(L, list, path, len, "FERRY_PATH");
    path += len;
    if (*path == ';') path++;
  }
  const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
  if (xdg && *xdg)
    lua_pushfstring(L, "%s/ferry", xdg);
  else if (home && *home)
    lua_pushfstring(L, "%s/.config/ferry", home);
  else
    return;
  size_t len;
  const char *dir = lua_tolstring(L, -1, &len);
  add_dir(L, list, dir, len, "config");
  lua_pop(L, 1);
}

static int l_search_dirs(lua_State *L) {
  ferry_push_search_dirs(L);
  return 1;
}

void ferry_open_search(lua_State *L) {
  lua_pushcfunction(L, l_search_dirs);
  lua_setfield(L, -2, "search_dirs");
}
