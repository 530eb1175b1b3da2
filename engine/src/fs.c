/* The filesystem: plain lstat/readdir/readlink, and writes confined below a root that never follow a symlink.
 *
 * core.fs_lstat(path) / core.fs_stat(path) -> {kind, mode, size, mtime, ino, dev, nlink, uid}
 *                                           | nil, "lstat <path>: <reason>", code
 *   kind: "file"|"dir"|"symlink"|"fifo"|"socket"|"char"|"block"; mode: permission bits & 07777
 * core.fs_readdir(path) -> names sorted bytewise (no "." "..") | nil, "readdir <path>: <reason>", code
 * core.fs_readlink(path) -> target | nil, "readlink <path>: <reason>", code
 *
 * Confined operations take a trusted root and a '/'-separated relative `rel` without empty, "." or ".."
 * components (anything else raises). Each directory on the way is opened from the previous one with
 * O_NOFOLLOW|O_DIRECTORY, so a symlink anywhere on the path fails with "ELOOP" and nothing is touched beyond
 * it. Failures: nil, "<op> <root>/<rel>: <reason>", code; reason names the offending component, e.g.
 * "<root>/evil is a symbolic link, not followed". Modes are masked to 0777 (setuid/setgid/sticky dropped).
 * core.fs_safe_lstat(root, rel) -> stat table | nil, msg, "ENOENT"...
 * core.fs_safe_mkdir(root, rel[, mode]) -> true   missing parents made; an existing dir is fine (mode applied)
 * core.fs_safe_write(root, rel, data[, mode=0644]) -> true   temp file beside the leaf, then renamed over it
 * core.fs_safe_symlink(root, rel, target) -> true              the same, for a symlink
 * core.fs_safe_remove(root, rel[, expect]) -> true   unlink a file/symlink, rmdir an empty dir; missing is fine.
 *   expect (a quick key, see ferry_fs_quick_key): remove only what still has that key, else
 *   nil, "remove <root>/<rel>: changed since the snapshot", "ESTALE"
 * core.fs_safe_rename(root, from_rel, to_rel) -> true   to's parents are made
 * core.fs_safe_chmod(root, rel, mode) -> true              a symlink leaf fails with "ELOOP"
 * (locks, temp dirs and tree removal: runfiles.c)
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define DIRBOX_MT "ferry.fs.dirbox"

/* ---- shared helpers (internal.h) ---- */

int ferry_fs_rel_ok(const char *rel, size_t len) {
  if (len == 0 || memchr(rel, '\0', len) != NULL || rel[0] == '/') return 0;
  for (size_t i = 0; i <= len;) {
    size_t j = i;
    while (j < len && rel[j] != '/') j++;
    size_t n = j - i;
    if (n == 0 || (n == 1 && rel[i] == '.') || (n == 2 && rel[i] == '.' && rel[i + 1] == '.')) return 0;
    i = j + 1;
  }
  return 1;
}

/* Open `name` in dirfd as a directory without following a symlink; create it when asked. fd or -errno. */
static int open_component(int dirfd, const char *name, int create) {
  for (int tries = 0; tries < 8; tries++) {
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) return fd;
    int err = errno;
    if (err == EINTR) continue;
    if (err == ENOTDIR || err == ELOOP) { /* Linux says ENOTDIR for a symlink under O_DIRECTORY */
      struct stat st;
      if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) return -ELOOP;
      return -ENOTDIR;
    }
    if (err != ENOENT || !create) return -err;
    if (mkdirat(dirfd, name, 0777) < 0 && errno != EEXIST) return -errno;
  }
  return -EAGAIN; /* the component keeps changing under us */
}

int ferry_fs_walk(int rootfd, const char *rel, size_t len, int create, size_t *bad) {
  *bad = FERRY_FS_NO_COMPONENT;
  int fd = fcntl(rootfd, F_DUPFD_CLOEXEC, 3);
  if (fd < 0) return -errno;
  char comp[NAME_MAX + 1];
  for (size_t i = 0; i < len;) {
    size_t j = i;
    while (j < len && rel[j] != '/') j++;
    int next;
    if (j - i > NAME_MAX) {
      next = -ENAMETOOLONG;
    } else {
      memcpy(comp, rel + i, j - i);
      comp[j - i] = '\0';
      next = open_component(fd, comp, create);
    }
    close(fd);
    if (next < 0) {
      *bad = j;
      return next;
    }
    fd = next;
    i = j + 1;
  }
  return fd;
}

int ferry_fs_open_parent(int rootfd, const char *rel, int create, const char **leaf, size_t *bad) {
  const char *slash = strrchr(rel, '/');
  *leaf = slash ? slash + 1 : rel;
  int fd = ferry_fs_walk(rootfd, rel, slash ? (size_t)(slash - rel) : 0, create, bad);
  if (fd >= 0 && strlen(*leaf) > NAME_MAX) {
    close(fd);
    *bad = FERRY_FS_NO_COMPONENT;
    return -ENAMETOOLONG;
  }
  return fd;
}

/* n random bytes; a weaker mix when the kernel has no entropy to give yet. */
static void random_bytes(unsigned char *out, size_t n) {
  if (getrandom(out, n, GRND_NONBLOCK) == (ssize_t)n) return;
  static unsigned counter;
  uint64_t x = (uint64_t)getpid() << 32 ^ (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)out ^ ++counter;
  for (size_t i = 0; i < n; i++) out[i] = (unsigned char)(x >> (8 * (i % 8)) ^ i);
}

/* The token of this run (process): 16 hex digits every temp name carries, so that a later run can tell ferry's
 * leftovers (a token recorded for the workspace) from a user's file that only looks like one. */
static char run_token[2 * 8 + 1];
static pthread_once_t run_token_once = PTHREAD_ONCE_INIT;

static void make_run_token(void) {
  unsigned char r[8];
  random_bytes(r, sizeof r);
  ferry_hex(r, sizeof r, run_token);
}

const char *ferry_fs_run_token(void) {
  pthread_once(&run_token_once, make_run_token);
  return run_token;
}

/* ".ferry-tmp-" + the run token + "-" + 16 random hex digits. */
static void temp_name(char *out) {
  unsigned char r[8];
  random_bytes(r, sizeof r);
  size_t n = sizeof FERRY_TMP_PREFIX - 1;
  memcpy(out, FERRY_TMP_PREFIX, n);
  memcpy(out + n, ferry_fs_run_token(), 16);
  out[n + 16] = '-';
  ferry_hex(r, sizeof r, out + n + 17);
}

void ferry_fs_tmp_init(ferry_fs_tmp *t) {
  t->dirfd = -1;
  t->fd = -1;
  t->name[0] = '\0';
}

int ferry_fs_tmp_create(ferry_fs_tmp *t, int dirfd) {
  t->dirfd = dirfd;
  t->fd = -1;
  for (int tries = 0; tries < 16; tries++) {
    temp_name(t->name);
    t->fd = openat(dirfd, t->name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (t->fd >= 0) return 0;
    if (errno != EEXIST && errno != EINTR) break;
  }
  int err = errno;
  t->name[0] = '\0';
  ferry_fs_tmp_abort(t);
  return -err;
}

int ferry_fs_tmp_write(ferry_fs_tmp *t, const void *data, size_t len) {
  const char *p = data;
  while (len > 0) {
    ssize_t n = write(t->fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* rename in dirfd; with noreplace an existing `to` fails with EEXIST (atomically where the filesystem can). */
static int rename_in(int dirfd, const char *from, const char *to, int noreplace) {
  if (!noreplace) return renameat(dirfd, from, dirfd, to) < 0 ? errno : 0;
  if (renameat2(dirfd, from, dirfd, to, RENAME_NOREPLACE) == 0) return 0;
  if (errno != EINVAL && errno != ENOSYS) return errno;
  struct stat st;
  if (fstatat(dirfd, to, &st, AT_SYMLINK_NOFOLLOW) == 0) return EEXIST;
  return renameat(dirfd, from, dirfd, to) < 0 ? errno : 0;
}

int ferry_fs_tmp_commit(ferry_fs_tmp *t, const char *leaf, unsigned mode, int noreplace) {
  int err = 0;
  if (fchmod(t->fd, mode & 0777) < 0) err = errno;
  if (close(t->fd) < 0 && err == 0 && errno != EINTR) err = errno;
  t->fd = -1;
  if (err == 0) err = rename_in(t->dirfd, t->name, leaf, noreplace);
  if (err == 0) t->name[0] = '\0'; /* renamed: nothing left to remove */
  ferry_fs_tmp_abort(t);
  return -err;
}

void ferry_fs_tmp_abort(ferry_fs_tmp *t) {
  if (t->fd >= 0) close(t->fd);
  if (t->dirfd >= 0 && t->name[0] != '\0') unlinkat(t->dirfd, t->name, 0);
  if (t->dirfd >= 0) close(t->dirfd);
  ferry_fs_tmp_init(t);
}

int ferry_fs_symlink_in(int dirfd, const char *leaf, const char *target, int noreplace) {
  char name[FERRY_FS_TMP_NAME];
  for (int tries = 0; tries < 16; tries++) {
    temp_name(name);
    if (symlinkat(target, dirfd, name) == 0) {
      int err = rename_in(dirfd, name, leaf, noreplace);
      if (err == 0) return 0;
      unlinkat(dirfd, name, 0);
      return -err;
    }
    if (errno != EEXIST) return -errno;
  }
  return -EEXIST;
}

void ferry_fs_quick_key(const struct stat *st, char *buf) {
  snprintf(buf, FERRY_FS_KEY_LEN, "%s %o %lld %lld %.17g", ferry_kind_name(st->st_mode), (unsigned)(st->st_mode & 0777),
           (long long)st->st_size, (long long)st->st_ino,
           (double)st->st_mtim.tv_sec + (double)st->st_mtim.tv_nsec / 1e9); /* as push_stat's mtime */
}

int ferry_fs_expect(int dirfd, const char *leaf, const char *expect) {
  struct stat st;
  if (fstatat(dirfd, leaf, &st, AT_SYMLINK_NOFOLLOW) < 0) {
    if (errno != ENOENT) return -errno;
    return expect[0] == '\0';
  }
  if (expect[0] == '\0') return 0;
  char key[FERRY_FS_KEY_LEN];
  ferry_fs_quick_key(&st, key);
  return strcmp(key, expect) == 0;
}

int ferry_fs_mkdir(int rootfd, const char *rel, int mode, size_t *bad) {
  size_t len = strlen(rel);
  int fd = ferry_fs_walk(rootfd, rel, len, 1, bad);
  if (fd == -ENOTDIR && *bad == len) return -EEXIST; /* the leaf is there and is not a directory */
  if (fd < 0) return fd;
  int err = 0;
  if (mode >= 0 && fchmod(fd, (mode_t)mode & 0777) < 0) err = errno;
  close(fd);
  return -err;
}

int ferry_fs_fail(lua_State *L, int err, const char *op, const char *root, const char *rel, size_t bad) {
  char code[64];
  ferry_errname(err, code, sizeof code);
  size_t rootlen = strlen(root);
  const char *sep = rootlen > 0 && root[rootlen - 1] == '/' ? "" : "/";
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  lua_pushfstring(L, "%s %s%s%s: ", op, root, sep, rel);
  luaL_addvalue(&b);
  if (bad != FERRY_FS_NO_COMPONENT && (err == ELOOP || err == ENOTDIR || err == EEXIST)) {
    luaL_addstring(&b, root);
    luaL_addstring(&b, sep);
    luaL_addlstring(&b, rel, bad);
    luaL_addstring(&b, err == ELOOP    ? " is a symbolic link, not followed"
                       : err == EEXIST ? " exists and is not a directory"
                                       : " is not a directory");
  } else {
    luaL_addstring(&b, strerror(err));
  }
  luaL_pushresult(&b);
  lua_pushnil(L);
  lua_insert(L, -2);
  lua_pushstring(L, code);
  return 3;
}

/* ---- argument checks (misuse raises) ---- */

static const char *check_rel(lua_State *L, int idx, const char *fn, const char *name) {
  size_t len;
  const char *s = ferry_check_string(L, idx, fn, name, &len);
  if (!ferry_fs_rel_ok(s, len))
    luaL_error(L, "%s: %s must be a relative path without empty, '.' or '..' components, got '%s'", fn, name, s);
  return s;
}

static int check_mode(lua_State *L, int idx, const char *fn, int dflt) {
  if (lua_isnoneornil(L, idx)) return dflt;
  if (!lua_isinteger(L, idx)) luaL_error(L, "%s: mode must be an integer, got %s", fn, luaL_typename(L, idx));
  lua_Integer m = lua_tointeger(L, idx);
  if (m < 0 || m > 07777) luaL_error(L, "%s: mode must be in 0..07777, got %I", fn, m);
  return (int)(m & 0777);
}

/* ---- stat ---- */

static void push_stat(lua_State *L, const struct stat *st) {
  lua_createtable(L, 0, 8);
  lua_pushstring(L, ferry_kind_name(st->st_mode));
  lua_setfield(L, -2, "kind");
  lua_pushinteger(L, st->st_mode & 07777);
  lua_setfield(L, -2, "mode");
  lua_pushinteger(L, (lua_Integer)st->st_size);
  lua_setfield(L, -2, "size");
  lua_pushnumber(L, (lua_Number)st->st_mtim.tv_sec + (lua_Number)st->st_mtim.tv_nsec / 1e9);
  lua_setfield(L, -2, "mtime");
  lua_pushinteger(L, (lua_Integer)st->st_ino);
  lua_setfield(L, -2, "ino");
  lua_pushinteger(L, (lua_Integer)st->st_dev);
  lua_setfield(L, -2, "dev");
  lua_pushinteger(L, (lua_Integer)st->st_nlink);
  lua_setfield(L, -2, "nlink");
  lua_pushinteger(L, (lua_Integer)st->st_uid);
  lua_setfield(L, -2, "uid");
}

static int do_stat(lua_State *L, int follow) {
  const char *fn = follow ? "stat" : "lstat";
  const char *path = ferry_check_path(L, 1, follow ? "fs_stat" : "fs_lstat", "path", NULL);
  struct stat st;
  if ((follow ? stat(path, &st) : lstat(path, &st)) < 0) return ferry_sys_fail(L, errno, fn, path);
  push_stat(L, &st);
  return 1;
}

static int l_lstat(lua_State *L) { return do_stat(L, 0); }
static int l_stat(lua_State *L) { return do_stat(L, 1); }

/* A DIR* owned by a to-be-closed userdata, so a raise while listing cannot leak it. */
static int dirbox_close(lua_State *L) {
  DIR **d = luaL_checkudata(L, 1, DIRBOX_MT);
  if (*d) closedir(*d);
  *d = NULL;
  return 0;
}

static int cmp_names(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int l_readdir(lua_State *L) {
  const char *path = ferry_check_path(L, 1, "fs_readdir", "path", NULL);
  lua_settop(L, 1);
  DIR **d = lua_newuserdatauv(L, sizeof *d, 0);
  *d = NULL;
  luaL_setmetatable(L, DIRBOX_MT);
  lua_toclose(L, 2);
  *d = opendir(path);
  if (*d == NULL) return ferry_sys_fail(L, errno, "readdir", path);
  lua_newtable(L); /* 3: names in directory order */
  lua_Integer n = 0;
  for (;;) {
    errno = 0;
    struct dirent *e = readdir(*d);
    if (e == NULL) break;
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    lua_pushstring(L, e->d_name);
    lua_rawseti(L, 3, ++n);
  }
  if (errno != 0) return ferry_sys_fail(L, errno, "readdir", path);
  closedir(*d);
  *d = NULL;
  const char **order = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof *order, 0); /* 4 */
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, 3, i);
    order[i - 1] = lua_tostring(L, -1); /* anchored by table 3 */
    lua_pop(L, 1);
  }
  qsort(order, (size_t)n, sizeof *order, cmp_names);
  lua_createtable(L, (int)n, 0);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_pushstring(L, order[i - 1]);
    lua_rawseti(L, -2, i);
  }
  return 1;
}

static int l_readlink(lua_State *L) {
  const char *path = ferry_check_path(L, 1, "fs_readlink", "path", NULL);
  char buf[PATH_MAX];
  ssize_t n = readlink(path, buf, sizeof buf);
  if (n < 0) return ferry_sys_fail(L, errno, "readlink", path);
  if ((size_t)n == sizeof buf) return ferry_sys_fail(L, ENAMETOOLONG, "readlink", path);
  lua_pushlstring(L, buf, (size_t)n);
  return 1;
}

/* ---- confined operations ---- */

static int open_root(const char *root) {
  int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  return fd < 0 ? -errno : fd;
}

/* Open root, then the parent directory of rel. fd or -errno; *bad as ferry_fs_walk. */
static int root_parent(const char *root, const char *rel, int create, const char **leaf, size_t *bad) {
  *bad = FERRY_FS_NO_COMPONENT;
  int rootfd = open_root(root);
  if (rootfd < 0) return rootfd;
  int fd = ferry_fs_open_parent(rootfd, rel, create, leaf, bad);
  close(rootfd);
  return fd;
}

static int l_safe_lstat(lua_State *L) {
  const char *root = ferry_check_path(L, 1, "fs_safe_lstat", "root", NULL);
  const char *rel = check_rel(L, 2, "fs_safe_lstat", "rel");
  const char *leaf;
  size_t bad;
  int dirfd = root_parent(root, rel, 0, &leaf, &bad);
  if (dirfd < 0) return ferry_fs_fail(L, -dirfd, "lstat", root, rel, bad);
  struct stat st;
  int err = fstatat(dirfd, leaf, &st, AT_SYMLINK_NOFOLLOW) < 0 ? errno : 0;
  close(dirfd);
  if (err) return ferry_fs_fail(L, err, "lstat", root, rel, FERRY_FS_NO_COMPONENT);
  push_stat(L, &st);
  return 1;
}

static int l_safe_mkdir(lua_State *L) {
  const char *root = ferry_check_path(L, 1, "fs_safe_mkdir", "root", NULL);
  const char *rel = check_rel(L, 2, "fs_safe_mkdir", "rel");
  int mode = check_mode(L, 3, "fs_safe_mkdir", -1);
  size_t bad = FERRY_FS_NO_COMPONENT;
  int rootfd = open_root(root);
  int r = rootfd < 0 ? rootfd : ferry_fs_mkdir(rootfd, rel, mode, &bad);
  if (rootfd >= 0) close(rootfd);
  if (r < 0) return ferry_fs_fail(L, -r, "mkdir", root, rel, bad);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_safe_write(lua_State *L) {
  const char *root = ferry_check_path(L, 1, "fs_safe_write", "root", NULL);
  const char *rel = check_rel(L, 2, "fs_safe_write", "rel");
  size_t len;
  const char *data = ferry_check_string(L, 3, "fs_safe_write", "data", &len);
  int mode = check_mode(L, 4, "fs_safe_write", 0644);
  const char *leaf;
  size_t bad;
  int dirfd = root_parent(root, rel, 1, &leaf, &bad);
  if (dirfd < 0) return ferry_fs_fail(L, -dirfd, "write", root, rel, bad);
  ferry_fs_tmp t;
  int r = ferry_fs_tmp_create(&t, dirfd);
  if (r == 0) r = ferry_fs_tmp_write(&t, data, len);
  if (r == 0) r = ferry_fs_tmp_commit(&t, leaf, (unsigned)mode, 0);
  else ferry_fs_tmp_abort(&t);
  if (r < 0) return ferry_fs_fail(L, -r, "write", root, rel, FERRY_FS_NO_COMPONENT);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_safe_symlink(lua_State *L) {
  const char *root = ferry_check_path(L, 1, "fs_safe_symlink", "root", NULL);
  const char *rel = check_rel(L, 2, "fs_safe_symlink", "rel");
  const char *target = ferry_check_path(L, 3, "fs_safe_symlink", "target", NULL);
  const char *leaf;
  size_t bad;
  int dirfd = root_parent(root, rel, 1, &leaf, &bad);
  if (dirfd < 0) return ferry_fs_fail(L, -dirfd, "symlink", root, rel, bad);
  int r = ferry_fs_symlink_in(dirfd, leaf, target, 0);
  close(dirfd);
  if (r < 0) return ferry_fs_fail(L, -r, "symlink", root, rel, FERRY_FS_NO_COMPONENT);
  lua_pushboolean(L, 1);
  return 1;
}

/* Unlink a file or symlink, or rmdir an empty directory; a missing leaf is fine. 0 or an errno. */
static int remove_leaf(int dirfd, const char *leaf) {
  if (unlinkat(dirfd, leaf, 0) == 0 || errno == ENOENT) return 0;
  int err = errno;
  if (err != EISDIR && err != EPERM) return err; /* Linux says EISDIR for a directory, POSIX EPERM */
  if (unlinkat(dirfd, leaf, AT_REMOVEDIR) == 0 || errno == ENOENT) return 0;
  return errno == ENOTDIR ? err : errno;
}

static int l_safe_remove(lua_State *L) {
  const char *root = ferry_check_path(L, 1, "fs_safe_remove", "root", NULL);
  const char *rel = check_rel(L, 2, "fs_safe_remove", "rel");
  const char *leaf;
  size_t bad;
  int dirfd = root_parent(root, rel, 0, &leaf, &bad);
  int missing_parent = dirfd == -ENOENT && bad != FERRY_FS_NO_COMPONENT;
  if (dirfd < 0 && !missing_parent) return ferry_fs_fail(L, -dirfd, "remove", root, rel, bad);
  const char *expect = lua_isnoneornil(L, 3) ? NULL : ferry_check_string(L, 3, "fs_safe_remove", "expect", NULL);
  if (dirfd >= 0) {
    int same = expect && expect[0] ? ferry_fs_expect(dirfd, leaf, expect) : 1;
    if (same == 0 && ferry_fs_expect(dirfd, leaf, "") == 1) same = 1; /* gone already: what we wanted */
    int err = same < 0 ? -same : same == 0 ? 0 : remove_leaf(dirfd, leaf);
    close(dirfd);
    if (same == 0) return ferry_fail(L, "ESTALE", "remove %s/%s: changed since the snapshot", root, rel);
    if (err) return ferry_fs_fail(L, err, "remove", root, rel, FERRY_FS_NO_COMPONENT);
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int l_safe_rename(lua_State *L) {
  const char *root = ferry_check_path(L, 1, "fs_safe_rename", "root", NULL);
  const char *from = check_rel(L, 2, "fs_safe_rename", "from_rel");
  const char *to = check_rel(L, 3, "fs_safe_rename", "to_rel");
  const char *from_leaf, *to_leaf;
  size_t bad;
  int fromfd = root_parent(root, from, 0, &from_leaf, &bad);
  if (fromfd < 0) return ferry_fs_fail(L, -fromfd, "rename", root, from, bad);
  int tofd = root_parent(root, to, 1, &to_leaf, &bad);
  if (tofd < 0) {
    close(fromfd);
    return ferry_fs_fail(L, -tofd, "rename to", root, to, bad);
  }
  int err = renameat(fromfd, from_leaf, tofd, to_leaf) < 0 ? errno : 0;
  close(fromfd);
  close(tofd);
  if (err) {
    char code[64];
    return ferry_fail(L, ferry_errname(err, code, sizeof code), "rename %s/%s to %s/%s: %s", root, from, root, to,
                      strerror(err));
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int l_safe_chmod(lua_State *L) {
  const char *root = ferry_check_path(L, 1, "fs_safe_chmod", "root", NULL);
  const char *rel = check_rel(L, 2, "fs_safe_chmod", "rel");
  if (lua_isnoneornil(L, 3)) return luaL_error(L, "fs_safe_chmod: mode must be an integer, got no value");
  int mode = check_mode(L, 3, "fs_safe_chmod", 0);
  const char *leaf;
  size_t bad;
  int dirfd = root_parent(root, rel, 0, &leaf, &bad);
  if (dirfd < 0) return ferry_fs_fail(L, -dirfd, "chmod", root, rel, bad);
  int err = 0;
  if (fchmodat(dirfd, leaf, (mode_t)mode, AT_SYMLINK_NOFOLLOW) < 0) {
    err = errno;
    struct stat st;
    if (err == EOPNOTSUPP && fstatat(dirfd, leaf, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
      err = ELOOP;
  }
  close(dirfd);
  if (err) return ferry_fs_fail(L, err, "chmod", root, rel, err == ELOOP ? strlen(rel) : FERRY_FS_NO_COMPONENT);
  lua_pushboolean(L, 1);
  return 1;
}

void ferry_open_fs(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"fs_lstat", l_lstat},
      {"fs_stat", l_stat},
      {"fs_readdir", l_readdir},
      {"fs_readlink", l_readlink},
      {"fs_safe_lstat", l_safe_lstat},
      {"fs_safe_mkdir", l_safe_mkdir},
      {"fs_safe_write", l_safe_write},
      {"fs_safe_symlink", l_safe_symlink},
      {"fs_safe_remove", l_safe_remove},
      {"fs_safe_rename", l_safe_rename},
      {"fs_safe_chmod", l_safe_chmod},
      {NULL, NULL},
  };
  if (luaL_newmetatable(L, DIRBOX_MT)) {
    lua_pushcfunction(L, dirbox_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, dirbox_close);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, fns, 0);
  lua_pushliteral(L, FERRY_TMP_PREFIX); /* core.TEMP_PREFIX: the name prefix of the safe writes' temp files */
  lua_setfield(L, -2, "TEMP_PREFIX");
  lua_pushstring(L, ferry_fs_run_token()); /* core.TEMP_TOKEN: this run's token, after the prefix */
  lua_setfield(L, -2, "TEMP_TOKEN");
}
