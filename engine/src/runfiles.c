/* ferry's own files outside the workspace: locks, temp dirs (removed when the process is ended by a signal),
 * tree removal, and who the process runs as.
 *
 * core.fs_lock(path) -> lock | nil, "lock <path>: held by another process", "EBUSY"
 *   flock(LOCK_EX|LOCK_NB) on path (created 0600, O_CLOEXEC so no child inherits it); lock:unlock() -> true;
 *   released on close/gc too, and by the kernel when the process dies.
 * core.fs_mkdtemp([prefix="ferry-"[, {signal_cleanup=false}]]) -> path | nil, msg, code
 *   mode 0700, in $TMPDIR or /tmp unless prefix has a '/'. With signal_cleanup the dir and the files directly
 *   in it are removed when SIGINT, SIGTERM or SIGHUP ends the process before fs_remove_tree removed it (the
 *   handler is installed only where the signal's action is the default one, then the signal ends the process
 *   as before).
 * core.fs_remove_tree(path) -> true | nil, msg, code   never follows a symlink; missing is fine
 * core.getuid() -> the real user id
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

#define LOCK_MT "ferry.fs.lock"

/* ---- locks ---- */

typedef struct fs_lock {
  int fd; /* -1 once released */
} fs_lock;

static int l_lock(lua_State *L) {
  const char *path = ferry_check_path(L, 1, "fs_lock", "path", NULL);
  fs_lock *k = lua_newuserdatauv(L, sizeof *k, 0);
  k->fd = -1;
  luaL_setmetatable(L, LOCK_MT);
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return ferry_sys_fail(L, errno, "lock", path);
  while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
    int err = errno;
    if (err == EINTR) continue;
    close(fd);
    if (err == EWOULDBLOCK) return ferry_fail(L, "EBUSY", "lock %s: held by another process", path);
    return ferry_sys_fail(L, err, "lock", path);
  }
  k->fd = fd;
  return 1;
}

static int lock_release(lua_State *L) {
  fs_lock *k = luaL_checkudata(L, 1, LOCK_MT);
  if (k->fd >= 0) close(k->fd); /* closing the only descriptor releases the flock */
  k->fd = -1;
  return 0;
}

static int l_unlock(lua_State *L) {
  lock_release(L);
  lua_pushboolean(L, 1);
  return 1;
}

static int lock_tostring(lua_State *L) {
  fs_lock *k = luaL_checkudata(L, 1, LOCK_MT);
  lua_pushstring(L, k->fd >= 0 ? "fs lock (held)" : "fs lock (released)");
  return 1;
}

/* ---- temp dirs removed at a fatal signal ----
 * A fixed table of paths the handler reads without a lock: a slot is claimed (BUSY), filled, then published
 * (LIVE); the handler only touches LIVE slots, and only with async-signal-safe calls. */

#define CLEANUP_SLOTS 128
#define CLEANUP_PATH 512
enum { FREE, BUSY, LIVE };
static struct {
  atomic_int state;
  char path[CLEANUP_PATH];
} cleanup[CLEANUP_SLOTS];

static const int fatal_signals[] = {SIGINT, SIGTERM, SIGHUP};

/* Unlink what is directly in path (an empty subdir too), then the dir; async-signal-safe. */
static void remove_flat(const char *path) {
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return;
  char buf[2048] __attribute__((aligned(8)));
  for (int pass = 0; pass < 8; pass++) { /* removing while reading may hide entries: read again */
    int removed = 0;
    lseek(fd, 0, SEEK_SET);
    long n;
    while ((n = syscall(SYS_getdents64, fd, buf, sizeof buf)) > 0) {
      for (long off = 0; off < n;) {
        struct {
          unsigned long long ino;
          long long off;
          unsigned short reclen;
          unsigned char type;
          char name[];
        } *d = (void *)(buf + off);
        if (strcmp(d->name, ".") != 0 && strcmp(d->name, "..") != 0) {
          if (unlinkat(fd, d->name, 0) == 0 || unlinkat(fd, d->name, AT_REMOVEDIR) == 0) removed++;
        }
        off += d->reclen;
      }
    }
    if (removed == 0) break;
  }
  close(fd);
  rmdir(path);
}

static void on_fatal_signal(int sig) {
  int saved = errno;
  for (int i = 0; i < CLEANUP_SLOTS; i++)
    if (atomic_load(&cleanup[i].state) == LIVE) remove_flat(cleanup[i].path);
  errno = saved;
  raise(sig); /* SA_RESETHAND put the default action back: the signal ends the process once we return */
}

static void install_handlers(void) {
  for (size_t i = 0; i < sizeof fatal_signals / sizeof fatal_signals[0]; i++) {
    struct sigaction old;
    if (sigaction(fatal_signals[i], NULL, &old) != 0) continue;
    if ((old.sa_flags & SA_SIGINFO) || old.sa_handler != SIG_DFL) continue; /* someone else's: theirs */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_fatal_signal;
    sa.sa_flags = SA_RESETHAND;
    sigfillset(&sa.sa_mask);
    sigaction(fatal_signals[i], &sa, NULL);
  }
}

static pthread_once_t handlers_once = PTHREAD_ONCE_INIT;

/* Remember path for the handler; 0 when the table is full or the path too long (then only the next run's
 * sweep removes it after a signal). */
static int cleanup_add(const char *path) {
  if (strlen(path) >= CLEANUP_PATH) return 0;
  for (int i = 0; i < CLEANUP_SLOTS; i++) {
    int expected = FREE;
    if (atomic_compare_exchange_strong(&cleanup[i].state, &expected, BUSY)) {
      strcpy(cleanup[i].path, path);
      atomic_store(&cleanup[i].state, LIVE);
      pthread_once(&handlers_once, install_handlers);
      return 1;
    }
  }
  return 0;
}

static void cleanup_forget(const char *path) {
  for (int i = 0; i < CLEANUP_SLOTS; i++) {
    int expected = LIVE;
    if (atomic_load(&cleanup[i].state) == LIVE && strcmp(cleanup[i].path, path) == 0 &&
        atomic_compare_exchange_strong(&cleanup[i].state, &expected, BUSY))
      atomic_store(&cleanup[i].state, FREE);
  }
}

static int l_mkdtemp(lua_State *L) {
  const char *prefix = lua_isnoneornil(L, 1) ? "ferry-" : ferry_check_path(L, 1, "fs_mkdtemp", "prefix", NULL);
  int signal_cleanup = 0;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_getfield(L, 2, "signal_cleanup");
    signal_cleanup = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  if (strchr(prefix, '/') == NULL) {
    const char *tmp = getenv("TMPDIR");
    luaL_addstring(&b, tmp && tmp[0] == '/' ? tmp : "/tmp");
    luaL_addchar(&b, '/');
  }
  luaL_addstring(&b, prefix);
  luaL_addstring(&b, "XXXXXX");
  luaL_pushresult(&b);
  size_t len;
  const char *pattern = lua_tolstring(L, -1, &len);
  char *path = lua_newuserdatauv(L, len + 1, 0); /* mkdtemp fills in the X's: not in a (shared) Lua string */
  memcpy(path, pattern, len + 1);
  if (mkdtemp(path) == NULL) return ferry_sys_fail(L, errno, "mkdtemp", pattern);
  if (signal_cleanup) cleanup_add(path);
  lua_pushstring(L, path);
  return 1;
}

/* Remove name in parentfd and everything under it, never following a symlink. 0 or -errno. */
static int remove_at(int parentfd, const char *name) {
  if (unlinkat(parentfd, name, 0) == 0 || errno == ENOENT) return 0;
  int unlink_err = errno;
  if (unlink_err != EISDIR && unlink_err != EPERM) return -unlink_err;
  int fd = openat(parentfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return errno == ENOTDIR ? -unlink_err : -errno;
  struct stat st;
  if (fstat(fd, &st) == 0 && (st.st_mode & S_IRWXU) != S_IRWXU) fchmod(fd, st.st_mode | S_IRWXU);
  DIR *d = fdopendir(fd);
  if (d == NULL) {
    int err = errno;
    close(fd);
    return -err;
  }
  int removed;
  do { /* entries removed while reading may hide others: pass again until a pass finds nothing */
    removed = 0;
    rewinddir(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
      int r = remove_at(dirfd(d), e->d_name);
      if (r < 0) {
        closedir(d);
        return r;
      }
      removed++;
    }
  } while (removed > 0);
  closedir(d);
  if (unlinkat(parentfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT) return -errno;
  return 0;
}

static int l_remove_tree(lua_State *L) {
  const char *path = ferry_check_path(L, 1, "fs_remove_tree", "path", NULL);
  if (strcmp(path, "/") == 0) return luaL_error(L, "fs_remove_tree: refusing to remove /");
  int r = remove_at(AT_FDCWD, path);
  if (r == 0) cleanup_forget(path);
  if (r < 0) return ferry_sys_fail(L, -r, "remove_tree", path);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_getuid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)getuid());
  return 1;
}

void ferry_open_runfiles(lua_State *L) {
  static const luaL_Reg lock_methods[] = {{"unlock", l_unlock}, {NULL, NULL}};
  static const luaL_Reg lock_meta[] = {
      {"__gc", lock_release}, {"__close", lock_release}, {"__tostring", lock_tostring}, {NULL, NULL}};
  static const luaL_Reg fns[] = {
      {"fs_lock", l_lock},
      {"fs_mkdtemp", l_mkdtemp},
      {"fs_remove_tree", l_remove_tree},
      {"getuid", l_getuid},
      {NULL, NULL},
  };
  ferry_new_class(L, LOCK_MT, lock_meta, lock_methods);
  luaL_setfuncs(L, fns, 0);
}
