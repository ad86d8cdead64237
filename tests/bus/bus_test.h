/* Helpers shared by the bus tests: unique socket paths, forked children that report through their exit status. */
#ifndef KILN_TESTS_BUS_TEST_H
#define KILN_TESTS_BUS_TEST_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static inline void bus_test_path(char *buf, size_t n, const char *tag) {
  static int seq;
  snprintf(buf, n, "/tmp/kiln-test-%s-%d-%d.sock", tag, (int)getpid(), seq++);
}

static inline int64_t bus_test_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Waits for a child; returns its exit status, or 128 + signal. */
static inline int bus_test_wait(pid_t pid) {
  int st = 0;
  if (waitpid(pid, &st, 0) != pid) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

#endif
