/*
 * proc.h: runs a program the way a shell user would and captures what it did: exit status, stdout, stderr.
 * For the CLI tests, which drive the built `kiln` binary as a black box. A run that passes its time limit is killed
 * and reported as timed out, so a hang fails the test instead of stalling the suite.
 */
#ifndef KILN_TEST_PROC_H
#define KILN_TEST_PROC_H

#include <stdbool.h>
#include <stddef.h>

typedef struct proc_result {
  int status;     /* exit code; 128 + signal number when killed by a signal */
  bool signaled;  /* killed by a signal (a crash, or the time limit) */
  bool timed_out;
  char *out, *err; /* NUL-terminated captures (malloc'd) */
  size_t out_len, err_len;
} proc_result;

/* Runs argv[0] (a path) with argv, feeding `in` (in_len bytes; NULL: /dev/null) on its stdin. Returns 0 when the
 * program ran (whatever its status), -1 when it could not be started (message on stderr). */
int proc_run(proc_result *r, const char *in, size_t in_len, int timeout_s, char *const argv[]);
void proc_result_free(proc_result *r);

#endif /* KILN_TEST_PROC_H */
