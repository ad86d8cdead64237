/* Runs a program with captured stdin/stdout/stderr and a time limit (see proc.h). */
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct sink_ {
  char *data;
  size_t len, cap;
} sink_;

static int sink_read_(sink_ *s, int fd) {
  if (s->cap - s->len < 4097) {
    size_t cap = s->cap ? s->cap * 2 : 8192;
    char *d = realloc(s->data, cap);
    if (!d) return -1;
    s->data = d;
    s->cap = cap;
  }
  ssize_t n = read(fd, s->data + s->len, s->cap - s->len - 1);
  if (n < 0) return errno == EINTR || errno == EAGAIN ? 1 : -1;
  s->len += (size_t)n;
  s->data[s->len] = '\0';
  return n == 0 ? 0 : 1; /* 0: end of file */
}

static double now_s_(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

int proc_run(proc_result *r, const char *in, size_t in_len, int timeout_s, char *const argv[]) {
  memset(r, 0, sizeof *r);
  int pin[2] = {-1, -1}, pout[2] = {-1, -1}, perr[2] = {-1, -1};
  if (pipe(pin) || pipe(pout) || pipe(perr)) {
    perror("proc_run: pipe");
    goto fail;
  }
  pid_t pid = fork();
  if (pid < 0) {
    perror("proc_run: fork");
    goto fail;
  }
  if (pid == 0) {
    if (!in) {
      int null = open("/dev/null", O_RDONLY);
      if (null < 0) _exit(126);
      dup2(null, 0);
    } else {
      dup2(pin[0], 0);
    }
    dup2(pout[1], 1);
    dup2(perr[1], 2);
    for (int fd = 3; fd < 1024; fd++) close(fd);
    execv(argv[0], argv);
    fprintf(stderr, "proc_run: exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  close(pin[0]);
  close(pout[1]);
  close(perr[1]);
  pin[0] = pout[1] = perr[1] = -1;
  if (!in) {
    close(pin[1]);
    pin[1] = -1;
  } else {
    fcntl(pin[1], F_SETFL, O_NONBLOCK);
  }
  /* A child that exits without reading all its input must not kill us with SIGPIPE. */
  signal(SIGPIPE, SIG_IGN);

  sink_ out = {0}, err = {0};
  size_t in_off = 0;
  bool out_open = true, err_open = true;
  double deadline = now_s_() + timeout_s;
  while (out_open || err_open) {
    struct pollfd fds[3];
    int nf = 0, io = -1, ie = -1, ii = -1;
    if (out_open) fds[io = nf++] = (struct pollfd){.fd = pout[0], .events = POLLIN};
    if (err_open) fds[ie = nf++] = (struct pollfd){.fd = perr[0], .events = POLLIN};
    if (pin[1] >= 0) fds[ii = nf++] = (struct pollfd){.fd = pin[1], .events = POLLOUT};
    double left = deadline - now_s_();
    if (left <= 0) {
      r->timed_out = true;
      kill(pid, SIGKILL);
      break;
    }
    int k = poll(fds, (nfds_t)nf, (int)(left * 1000) + 1);
    if (k < 0 && errno != EINTR) break;
    if (k <= 0) continue;
    if (io >= 0 && fds[io].revents) {
      int s = sink_read_(&out, pout[0]);
      if (s <= 0) out_open = false;
    }
    if (ie >= 0 && fds[ie].revents) {
      int s = sink_read_(&err, perr[0]);
      if (s <= 0) err_open = false;
    }
    if (ii >= 0 && fds[ii].revents) {
      ssize_t n = in_off < in_len ? write(pin[1], in + in_off, in_len - in_off) : 0;
      if (n > 0) in_off += (size_t)n;
      if (n < 0 && errno != EAGAIN && errno != EINTR) in_off = in_len; /* the reader is gone */
      if (in_off >= in_len) {
        close(pin[1]);
        pin[1] = -1;
      }
    }
  }
  int ws = 0;
  while (waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(ws)) r->status = WEXITSTATUS(ws);
  else if (WIFSIGNALED(ws)) {
    r->signaled = true;
    r->status = 128 + WTERMSIG(ws);
  }
  if (pin[1] >= 0) close(pin[1]);
  close(pout[0]);
  close(perr[0]);
  r->out = out.data ? out.data : calloc(1, 1);
  r->out_len = out.len;
  r->err = err.data ? err.data : calloc(1, 1);
  r->err_len = err.len;
  if (!r->out || !r->err) {
    proc_result_free(r);
    fprintf(stderr, "proc_run: out of memory\n");
    return -1;
  }
  return 0;
fail:
  for (int i = 0; i < 2; i++) {
    if (pin[i] >= 0) close(pin[i]);
    if (pout[i] >= 0) close(pout[i]);
    if (perr[i] >= 0) close(perr[i]);
  }
  return -1;
}

void proc_result_free(proc_result *r) {
  free(r->out);
  free(r->err);
  r->out = r->err = NULL;
}
