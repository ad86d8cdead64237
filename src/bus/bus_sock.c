/*
 * Bus sockets: the handshake (one fixed-size hello each way, the segment fd riding on the listener's answer with
 * SCM_RIGHTS), peer credentials (SO_PEERCRED) and liveness (the kernel closes a dead process's socket, so the
 * survivor sees end-of-file or a hang-up on its end).
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "bus/bus_impl.h"

int64_t bus__now_ns(void) { return kiln_mono_ns(); }

/* A few ns (no syscall), a few ms of resolution: enough to rate-limit liveness checks on non-waiting paths. */
int64_t bus__coarse_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void bus__hello_init(bus_hello *h) {
  memset(h, 0, sizeof *h);
  h->magic = KILN_BUS_MAGIC;
  h->version = KILN_BUS_VERSION;
  h->endian = BUS_ENDIAN;
  h->hello_bytes = sizeof(bus_hello);
  h->ring_hdr_bytes = sizeof(kiln_ring);
  h->rec_hdr_bytes = sizeof(kiln_rec);
}

/* Checks a peer's hello; `who` names the peer in the message. */
int bus__hello_check(const bus_hello *h, const char *who) {
  if (h->magic != KILN_BUS_MAGIC) return kiln_error(KILN_EFORMAT, "bus: %s is not a kiln bus peer (bad magic)", who);
  if (h->endian != BUS_ENDIAN) return kiln_error(KILN_EUNSUPPORTED, "bus: %s has the other byte order", who);
  if (h->version != KILN_BUS_VERSION)
    return kiln_error(KILN_EUNSUPPORTED, "bus: %s speaks version %u, we speak %u", who, h->version, KILN_BUS_VERSION);
  if (h->hello_bytes != sizeof(bus_hello) || h->ring_hdr_bytes != sizeof(kiln_ring) ||
      h->rec_hdr_bytes != sizeof(kiln_rec))
    return kiln_error(KILN_EUNSUPPORTED, "bus: %s uses other header sizes", who);
  if (h->flags & ~(uint32_t)KILN_RING_FLAG_WAKE) return kiln_error(KILN_EUNSUPPORTED, "bus: %s sent unknown flags", who);
  return KILN_OK;
}

int bus__send_hello(int fd, const bus_hello *h, int pass_fd) {
  struct iovec iov = {(void *)h, sizeof *h};
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } u;
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (pass_fd >= 0) {
    memset(&u, 0, sizeof u);
    msg.msg_control = u.buf;
    msg.msg_controllen = sizeof u.buf;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
  }
  ssize_t n;
  do n = sendmsg(fd, &msg, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n != (ssize_t)sizeof *h)
    return kiln_error(KILN_EIO, "bus: send hello: %s", n < 0 ? strerror(errno) : "short write");
  return KILN_OK;
}

/* Receives one hello within timeout_ns; *fd_out gets a passed fd (or -1). Extra fds are closed, never leaked. */
int bus__recv_hello(int fd, bus_hello *h, int *fd_out, int64_t timeout_ns, const char *who) {
  if (fd_out) *fd_out = -1;
  struct pollfd p = {fd, POLLIN, 0};
  int ms = (int)(timeout_ns / 1000000);
  int pr;
  do pr = poll(&p, 1, ms);
  while (pr < 0 && errno == EINTR);
  if (pr == 0) return kiln_error(KILN_ETIMEDOUT, "bus: %s sent no hello", who);
  if (pr < 0) return kiln_error(KILN_EIO, "bus: poll: %s", strerror(errno));
  union {
    char buf[CMSG_SPACE(4 * sizeof(int))];
    struct cmsghdr align;
  } u;
  struct iovec iov = {h, sizeof *h};
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = u.buf;
  msg.msg_controllen = sizeof u.buf;
  ssize_t n;
  do n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  int got = -1;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < k; i++) {
      int f;
      memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
      if (got < 0 && fd_out) got = f;
      else close(f);
    }
  }
  if (n != (ssize_t)sizeof *h || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
    if (got >= 0) close(got);
    if (n == 0) return kiln_error(KILN_EPEERDEAD, "bus: %s closed the connection during the handshake", who);
    return kiln_error(KILN_EFORMAT, "bus: %s sent a malformed hello", who);
  }
  if (fd_out) *fd_out = got;
  return KILN_OK;
}

/* SO_PEERCRED: the peer's uid must be ours or on the allow-list. */
int bus__peer_check(int fd, const uint32_t *allow, uint32_t n_allow, int32_t *pid, uint32_t *uid) {
  struct ucred cr;
  socklen_t len = sizeof cr;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0 || len != sizeof cr)
    return kiln_error(KILN_EIO, "bus: SO_PEERCRED: %s", strerror(errno));
  *pid = (int32_t)cr.pid;
  *uid = (uint32_t)cr.uid;
  if (cr.uid == geteuid()) return KILN_OK;
  for (uint32_t i = 0; i < n_allow; i++)
    if (allow[i] == (uint32_t)cr.uid) return KILN_OK;
  return kiln_error(KILN_EPERM, "bus: peer uid %u (pid %d) is not allowed", (unsigned)cr.uid, (int)cr.pid);
}

/* KILN_OK while the peer holds its end; KILN_ECLOSED after it said goodbye (kiln_bus_chan_close), KILN_EPEERDEAD
 * after it closed or died without one. Nothing else is sent after the handshake; stray bytes are ignored. */
int bus__sock_alive(int fd) {
  struct pollfd p = {fd, POLLIN | POLLRDHUP, 0};
  int pr;
  do pr = poll(&p, 1, 0);
  while (pr < 0 && errno == EINTR);
  if (pr <= 0) return KILN_OK;
  if (p.revents & POLLIN) {
    char buf[64];
    ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0 && memchr(buf, 'B', (size_t)n)) return KILN_ECLOSED;
    if (n == 0) return KILN_EPEERDEAD;
    if (n > 0 && !(p.revents & (POLLHUP | POLLRDHUP | POLLERR))) return KILN_OK;
  }
  if (p.revents & (POLLHUP | POLLRDHUP | POLLERR | POLLNVAL)) return KILN_EPEERDEAD;
  return KILN_OK;
}
