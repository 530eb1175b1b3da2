/* Small helpers the C files of the core share (declared in internal.h): argument and option checks, failures
 * in luv's convention, errno names, file-type names, hex digits, metatables and handles, registry references,
 * the main thread, the UTF-8 locale. */
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"

int ferry_fail(lua_State *L, const char *code, const char *fmt, ...) {
  va_list ap;
  lua_pushnil(L);
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_pushstring(L, code);
  return 3;
}

const char *ferry_errname(int err, char *buf, size_t size) {
  uv_err_name_r(uv_translate_sys_error(err), buf, size);
  return buf;
}

int ferry_sys_fail(lua_State *L, int err, const char *op, const char *path) {
  char code[64];
  return ferry_fail(L, ferry_errname(err, code, sizeof code), "%s %s: %s", op, path, strerror(err));
}

const char *ferry_check_string(lua_State *L, int idx, const char *fn, const char *name, size_t *len) {
  if (lua_type(L, idx) != LUA_TSTRING) {
    if (fn == NULL) luaL_typeerror(L, idx, "string");
    luaL_error(L, "%s: %s must be a string, got %s", fn, name, luaL_typename(L, idx));
  }
  return lua_tolstring(L, idx, len);
}

const char *ferry_check_path(lua_State *L, int idx, const char *fn, const char *name, size_t *len) {
  size_t n;
  const char *s = ferry_check_string(L, idx, fn, name, &n);
  if (n == 0) luaL_error(L, "%s: %s is empty", fn, name);
  if (strlen(s) != n) luaL_error(L, "%s: %s contains a NUL byte", fn, name);
  if (len) *len = n;
  return s;
}

const char *ferry_kind_name(unsigned mode) {
  switch (mode & S_IFMT) {
  case S_IFREG: return "file";
  case S_IFDIR: return "dir";
  case S_IFLNK: return "symlink";
  case S_IFIFO: return "fifo";
  case S_IFSOCK: return "socket";
  case S_IFCHR: return "char";
  case S_IFBLK: return "block";
  default: return "other";
  }
}

void ferry_hex(const unsigned char *in, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[in[i] >> 4];
    out[2 * i + 1] = digits[in[i] & 0xf];
  }
  out[2 * n] = '\0';
}

void ferry_new_class(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods) {
  if (luaL_newmetatable(L, name)) {
    luaL_setfuncs(L, meta, 0);
    if (methods) {
      lua_newtable(L);
      luaL_setfuncs(L, methods, 0);
      lua_setfield(L, -2, "__index");
    }
  }
  lua_pop(L, 1);
}

void ferry_new_handle_class(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods) {
  if (luaL_newmetatable(L, name)) {
    luaL_setfuncs(L, meta, 0);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "methods");
  }
  lua_pop(L, 1);
}

int ferry_push_method(lua_State *L, const char *k) {
  luaL_getmetafield(L, 1, "methods");
  lua_getfield(L, -1, k);
  return 1;
}

void **ferry_push_handle(lua_State *L, void *p, const char *mt) {
  void **ud = lua_newuserdatauv(L, sizeof *ud, 0);
  *ud = p;
  luaL_setmetatable(L, mt);
  return ud;
}

void ferry_unref(lua_State *L, int *ref) {
  if (*ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, *ref);
  *ref = LUA_NOREF;
}

const char *ferry_opt_string(lua_State *L, int opts, const char *fn, const char *field) {
  int t = lua_getfield(L, opts, field);
  const char *s = NULL;
  if (t == LUA_TSTRING)
    s = lua_tostring(L, -1); /* the options table keeps it alive */
  else if (t != LUA_TNIL)
    luaL_error(L, "%s: opts.%s must be a string, got %s", fn, field, luaL_typename(L, -1));
  lua_pop(L, 1);
  return s;
}

uint64_t ferry_opt_uint(lua_State *L, int opts, const char *fn, const char *field, uint64_t dflt) {
  int t = lua_getfield(L, opts, field);
  uint64_t v = dflt;
  if (t != LUA_TNIL) {
    int isnum;
    lua_Number n = lua_tonumberx(L, -1, &isnum);
    if (!isnum || !(n >= 0) || n > 1e15) luaL_error(L, "%s: opts.%s must be a number >= 0", fn, field);
    v = (uint64_t)n;
  }
  lua_pop(L, 1);
  return v;
}

lua_State *ferry_main_thread(lua_State *L) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  lua_State *main = lua_tothread(L, -1);
  lua_pop(L, 1);
  return main;
}

locale_t ferry_utf8_locale(void) {
  locale_t loc = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
  return loc ? loc : newlocale(LC_CTYPE_MASK, "C.utf8", (locale_t)0);
}
