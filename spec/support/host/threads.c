/* A host running two engines on two threads at once (ferry.h: one engine per thread). Each runs many
 * processes concurrently; one engine is freed while the other's child still runs: closing it kills its own
 * children only. */
#include <pthread.h>
#include <stdio.h>

#include <ferry.h>

typedef struct job {
  const char *name;
  const char *code;
  int rc;
  char error[512];
} job;

/* 10 rounds of 20 concurrent children, each echoing its index back. */
#define BUSY                                                                                                   \
  "local ferry = require 'ferry'\n"                                                                           \
  "for round = 1, 10 do\n"                                                                                    \
  "  local tasks = {}\n"                                                                                      \
  "  for i = 1, 20 do\n"                                                                                      \
  "    tasks[i] = ferry.spawn(function()\n"                                                                   \
  "      return assert(ferry.proc.run{argv={'sh','-c','echo '..i}}).stdout\n"                                  \
  "    end)\n"                                                                                                \
  "  end\n"                                                                                                   \
  "  for i, out in ipairs(ferry.wait(tasks)) do assert(out == i..'\\n', out) end\n"                           \
  "end\n"

static void *run(void *arg) {
  job *j = arg;
  ferry_engine *e = ferry_new();
  if (!e) {
    j->rc = -1;
    return NULL;
  }
  j->rc = ferry_dostring(e, j->code);
  if (j->rc != 0) snprintf(j->error, sizeof j->error, "%s", ferry_error(e));
  ferry_free(e);
  return NULL;
}

int main(int argc, char **argv) {
  /* A: busy, then leaves `sleep MARK` running and is freed: that child is killed.
   * B: busy, then a child that outlives A's free: it must finish normally. */
  const char *mark = argc > 1 ? argv[1] : "30";
  char a_code[2048];
  snprintf(a_code, sizeof a_code,
           BUSY "assert(require('ferry.core').proc_start({argv={'sleep','%s'}}, function() end))\n", mark);
  job a = {"a", a_code, 0, ""};
  job b = {"b",
           BUSY "local r = assert(ferry.proc.run{argv={'sh','-c','sleep 2; echo survived'}})\n"
                "assert(r.stdout == 'survived\\n' and r.code == 0, r.stdout .. r.stderr)\n",
           0, ""};
  pthread_t ta, tb;
  if (pthread_create(&ta, NULL, run, &a) != 0 || pthread_create(&tb, NULL, run, &b) != 0) return 10;
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  printf("a: %d %s\n", a.rc, a.error);
  printf("b: %d %s\n", b.rc, b.error);
  return a.rc != 0 || b.rc != 0;
}
