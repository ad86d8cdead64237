/* Bus: handshake, request/response with correlation ids, several clients with fair fan-in, refusals (bad magic,
 * bad version, unsealed segment, foreign uid), close and timeouts. Clients run in forked processes. */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <cmocka.h>

#include "bus/bus_impl.h"
#include "bus_test.h"
#include "kiln/bus.h"

/* Child: sends n requests "req <i>" and checks each response echoes the payload uppercased with the same corr. */
static int client_echo(const char *path, int n) {
  kiln_bus_chan *ch;
  if (kiln_bus_connect(&ch, path, NULL, 2000000000ll) != KILN_OK) return 10;
  for (int i = 0; i < n; i++) {
    char msg[32];
    int len = snprintf(msg, sizeof msg, "req %d", i);
    uint64_t corr = kiln_bus_next_corr(ch);
    if (kiln_bus_send(ch, msg, (uint64_t)len, 7, corr, 1000000000ll) != KILN_OK) return 11;
    const kiln_rec *r;
    if (kiln_bus_peek(ch, &r, 2000000000ll) != KILN_OK) return 12;
    if (r->corr != corr || r->type != 8 || r->size != (uint32_t)len) return 13;
    for (int k = 0; k < len; k++)
      if (((const char *)kiln_rec_data(r))[k] != (msg[k] >= 'a' && msg[k] <= 'z' ? msg[k] - 32 : msg[k])) return 14;
    kiln_bus_release(ch);
  }
  kiln_bus_chan_close(ch);
  return 0;
}

static void serve(kiln_bus *b, int clients, int per_client) {
  int64_t served = 0, closed = 0;
  while (closed < clients) {
    kiln_bus_chan *nc;
    int arc = kiln_bus_accept(b, 0, &nc);
    assert_true(arc == KILN_OK || arc == KILN_ETIMEDOUT);
    kiln_bus_chan *ch;
    const kiln_rec *r;
    int rc = kiln_bus_poll(b, 5000000, &ch, &r);
    if (rc == KILN_ETIMEDOUT) continue;
    if (rc == KILN_ECLOSED) {
      closed++;
      kiln_bus_chan_close(ch);
      continue;
    }
    assert_int_equal(rc, KILN_OK);
    assert_int_equal(r->type, 7);
    char up[64];
    uint32_t n = r->size;
    assert_true(n < sizeof up);
    for (uint32_t k = 0; k < n; k++) {
      char c = ((const char *)kiln_rec_data(r))[k];
      up[k] = c >= 'a' && c <= 'z' ? (char)(c - 32) : c;
    }
    uint64_t corr = r->corr;
    kiln_bus_release(ch);
    assert_int_equal(kiln_bus_send(ch, up, n, 8, corr, 1000000000ll), KILN_OK);
    served++;
  }
  assert_int_equal(served, (int64_t)clients * per_client);
}

static void test_echo_many_clients(void **state) {
  (void)state;
  char path[108];
  bus_test_path(path, sizeof path, "echo");
  kiln_bus *b;
  kiln_bus_opts o = {.ring_bytes = 4096, .max_clients = 4, .spin = 100};
  assert_int_equal(kiln_bus_listen(&b, path, &o), KILN_OK);
  pid_t kids[3];
  for (int i = 0; i < 3; i++) {
    kids[i] = fork();
    if (kids[i] == 0) _exit(client_echo(path, 2000));
  }
  serve(b, 3, 2000);
  for (int i = 0; i < 3; i++) assert_int_equal(bus_test_wait(kids[i]), 0);
  kiln_bus_close(b);
  assert_int_equal(access(path, F_OK), -1); /* socket file removed */
}

/* A raw client that sends a hello with a wrong field gets a refusal with a status, and no segment. */
static int raw_hello(const char *path, uint64_t magic, uint32_t version, int32_t *status, int *got_fd) {
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un a = {0};
  a.sun_family = AF_UNIX;
  strcpy(a.sun_path, path);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) return -1;
  bus_hello h;
  bus__hello_init(&h);
  h.magic = magic;
  h.version = version;
  if (bus__send_hello(fd, &h, -1) != KILN_OK) return -2;
  int seg = -1;
  int rc = bus__recv_hello(fd, &h, &seg, 2000000000ll, "listener");
  *status = h.status;
  *got_fd = seg >= 0;
  if (seg >= 0) close(seg);
  close(fd);
  return rc;
}

static void test_refuses_bad_hello(void **state) {
  (void)state;
  char path[108];
  bus_test_path(path, sizeof path, "hello");
  kiln_bus *b;
  assert_int_equal(kiln_bus_listen(&b, path, NULL), KILN_OK);
  const struct {
    uint64_t magic;
    uint32_t version;
    int want;
  } cases[] = {{KILN_BUS_MAGIC ^ 1, KILN_BUS_VERSION, KILN_EFORMAT},
               {KILN_BUS_MAGIC, KILN_BUS_VERSION + 1, KILN_EUNSUPPORTED}};
  for (int i = 0; i < 2; i++) {
    pid_t k = fork();
    if (k == 0) {
      int32_t status = 0;
      int got_fd = 0;
      int rc = raw_hello(path, cases[i].magic, cases[i].version, &status, &got_fd);
      _exit(rc == KILN_OK && status == cases[i].want && !got_fd ? 0 : 1);
    }
    kiln_bus_chan *ch = NULL;
    assert_int_equal(kiln_bus_accept(b, 2000000000ll, &ch), cases[i].want);
    assert_null(ch);
    assert_int_equal(bus_test_wait(k), 0);
  }
  kiln_bus_close(b);
}

/* A fake listener: answers with a modified hello and optionally an unsealed memfd. */
static void fake_listener(const char *path, int mode) {
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un a = {0};
  a.sun_family = AF_UNIX;
  strcpy(a.sun_path, path);
  unlink(path);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 1) != 0) _exit(2);
  int c = accept(fd, NULL, NULL);
  bus_hello h;
  if (bus__recv_hello(c, &h, NULL, 2000000000ll, "client") != KILN_OK) _exit(3);
  uint64_t cap = 4096, off_req, off_resp, bytes;
  bus__seg_layout(cap, &off_req, &off_resp, &bytes);
  bus__hello_init(&h);
  h.ring_cap = cap;
  h.seg_bytes = bytes;
  h.off_req = off_req;
  h.off_resp = off_resp;
  h.flags = KILN_RING_FLAG_WAKE;
  int seg = memfd_create("fake", MFD_ALLOW_SEALING);
  if (ftruncate(seg, (off_t)bytes) != 0) _exit(4);
  if (mode == 0) h.magic ^= 0xff;
  if (mode == 1) h.version = 99;
  if (mode == 3) h.seg_bytes = 1ull << 40;
  if (mode != 2) {
    /* a real segment, sealed, so only the hello is wrong */
    void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, seg, 0);
    bus_seg_hdr *sh = m;
    sh->magic = KILN_BUS_MAGIC;
    fcntl(seg, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
  }
  bus__send_hello(c, &h, seg);
  char x;
  (void)!read(c, &x, 1); /* wait for the client to hang up */
  _exit(0);
}

static void test_client_refuses_bad_listener(void **state) {
  (void)state;
  const int want[] = {KILN_EFORMAT, KILN_EUNSUPPORTED, KILN_EPERM, KILN_EFORMAT};
  for (int mode = 0; mode < 4; mode++) {
    char path[108];
    bus_test_path(path, sizeof path, "fake");
    pid_t k = fork();
    if (k == 0) fake_listener(path, mode);
    kiln_bus_chan *ch = NULL;
    int rc = kiln_bus_connect(&ch, path, NULL, 2000000000ll);
    assert_int_equal(rc, want[mode]);
    assert_null(ch);
    assert_true(strlen(kiln_last_error()) > 0);
    assert_int_equal(bus_test_wait(k), 0);
    unlink(path);
  }
}

/* SO_PEERCRED: a client of another uid is refused unless allow-listed (needs root to switch uid). */
static void test_peer_uid(void **state) {
  (void)state;
  if (geteuid() != 0) {
    skip();
  }
  for (int allow = 0; allow < 2; allow++) {
    char path[108];
    bus_test_path(path, sizeof path, "uid");
    uint32_t nobody = 65534;
    kiln_bus_opts o = {.ring_bytes = 4096, .allow_uids = allow ? &nobody : NULL, .n_allow_uids = allow ? 1 : 0};
    kiln_bus *b;
    assert_int_equal(kiln_bus_listen(&b, path, &o), KILN_OK);
    chmod(path, 0666); /* let the other uid reach the socket, so SO_PEERCRED is what decides */
    pid_t k = fork();
    if (k == 0) {
      if (setuid(nobody) != 0) _exit(9);
      kiln_bus_chan *ch;
      kiln_bus_opts co = {.allow_uids = (uint32_t[]){0}, .n_allow_uids = 1}; /* the client accepts a root listener */
      int rc = kiln_bus_connect(&ch, path, &co, 2000000000ll);
      if (rc == KILN_OK) kiln_bus_chan_close(ch);
      if (getenv("KILN_TEST_DEBUG")) fprintf(stderr, "allow=%d rc=%d %s\n", allow, rc, kiln_last_error());
      _exit(allow ? rc != KILN_OK : rc != KILN_EPERM);
    }
    kiln_bus_chan *ch = NULL;
    int rc = kiln_bus_accept(b, 2000000000ll, &ch);
    assert_int_equal(rc, allow ? KILN_OK : KILN_EPERM);
    if (allow) {
      uint32_t uid;
      kiln_bus_peer(ch, NULL, &uid);
      assert_int_equal(uid, nobody);
    }
    assert_int_equal(bus_test_wait(k), 0);
    kiln_bus_close(b);
  }
}

/* Timeouts, close reported as KILN_ECLOSED, records sent before close still delivered, slot reuse. */
static void test_close_timeout_reuse(void **state) {
  (void)state;
  char path[108];
  bus_test_path(path, sizeof path, "close");
  kiln_bus *b;
  kiln_bus_opts o = {.ring_bytes = 4096, .max_clients = 1, .spin = 10};
  assert_int_equal(kiln_bus_listen(&b, path, &o), KILN_OK);
  for (int round = 0; round < 3; round++) {
    pid_t k = fork();
    if (k == 0) {
      kiln_bus_chan *ch;
      if (kiln_bus_connect(&ch, path, NULL, 2000000000ll) != KILN_OK) _exit(1);
      for (int i = 0; i < 3; i++)
        if (kiln_bus_send(ch, "last words", 10, 1, (uint64_t)i, -1) != KILN_OK) _exit(2);
      kiln_bus_chan_close(ch);
      _exit(0);
    }
    kiln_bus_chan *ch;
    assert_int_equal(kiln_bus_accept(b, 2000000000ll, &ch), KILN_OK);
    assert_int_equal(bus_test_wait(k), 0);
    const kiln_rec *r;
    for (int i = 0; i < 3; i++) {
      assert_int_equal(kiln_bus_peek(ch, &r, 1000000000ll), KILN_OK);
      assert_int_equal(r->corr, i);
      kiln_bus_release(ch);
    }
    int64_t t0 = bus_test_now_ns();
    assert_int_equal(kiln_bus_peek(ch, &r, 1000000000ll), KILN_ECLOSED);
    assert_true(bus_test_now_ns() - t0 < 100000000);
    /* the slot is not freed until closed; the next client reclaims it anyway because this one is dead */
  }
  /* timeout with a live client */
  pid_t k = fork();
  if (k == 0) {
    kiln_bus_chan *ch;
    if (kiln_bus_connect(&ch, path, NULL, 2000000000ll) != KILN_OK) _exit(1);
    const kiln_rec *r;
    int rc = kiln_bus_peek(ch, &r, 3000000000ll); /* the listener sends one record, then closes */
    if (rc != KILN_OK || r->size != 2) _exit(2);
    kiln_bus_release(ch);
    rc = kiln_bus_peek(ch, &r, 3000000000ll);
    _exit(rc == KILN_ECLOSED ? 0 : 3);
  }
  kiln_bus_chan *ch;
  assert_int_equal(kiln_bus_accept(b, 2000000000ll, &ch), KILN_OK);
  const kiln_rec *r;
  int64_t t0 = bus_test_now_ns();
  assert_int_equal(kiln_bus_peek(ch, &r, 30000000), KILN_ETIMEDOUT);
  int64_t dt = bus_test_now_ns() - t0;
  assert_true(dt >= 30000000 && dt < 1000000000);
  assert_int_equal(kiln_bus_peek(ch, &r, 0), KILN_EAGAIN);
  assert_int_equal(kiln_bus_send(ch, "ok", 2, 1, 1, -1), KILN_OK);
  kiln_bus_chan_close(ch);
  assert_int_equal(bus_test_wait(k), 0);
  /* a record larger than the ring */
  kiln_bus_close(b);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_echo_many_clients), cmocka_unit_test(test_refuses_bad_hello),
      cmocka_unit_test(test_client_refuses_bad_listener), cmocka_unit_test(test_peer_uid),
      cmocka_unit_test(test_close_timeout_reuse),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
