/*
 * bus_bench: the bus between two processes pinned to CPUs 0 and 1, every figure beside the raw cache-line round
 * trip measured in the same run, the two alternating round by round (this VM moves its vCPUs: the raw round trip
 * flips between about 120 and 525 ns, so only figures taken side by side compare).
 *
 *   bus_bench pingpong ROUNDS N      32-byte request/response through the bus API (send + blocking peek), and
 *                                    through the inline core alone, vs the raw round trip; per round N round trips
 *                                    of each, in turn: p50/p99/p99.9
 *   bus_bench c2c ROUNDS SECONDS     1 KiB frames, 4 MiB ring, C producer -> C consumer; each round measures the
 *                                    raw round trip, then streams for SECONDS in mode "touch" (the producer writes
 *                                    the frame index, the consumer reads it: the transport) and then "full"
 *                                    (the producer writes all 1024 bytes, the consumer reads all of them)
 *   bus_bench raw N                  the raw round trip alone (bench/bus/bus_bench_py.py runs it between rounds)
 *   bus_bench produce SOCKET MODE    a producer for the Python consumer (pinned to CPU 0): streams frames until the
 *                                    consumer goes away
 *
 * Output: one JSON object per line on stdout (bench/bus/run_bench.py collects them into bench/results/).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_util.h"
#include "kiln/bus.h"

#define FRAME 1024
#define RING (4u << 20)

static double g_tpn;

static void die(const char *what) {
  fprintf(stderr, "bus_bench: %s: %s\n", what, kiln_last_error());
  exit(1);
}

static int wait_child(pid_t pid) {
  int st = 0;
  if (waitpid(pid, &st, 0) != pid) return 1;
  return !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static raw_line *shared_line(void) {
  raw_line *l = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (l == MAP_FAILED) {
    perror("bus_bench: mmap");
    exit(1);
  }
  return l;
}

static void print_pct(const char *key, pct p) {
  printf("\"%s\": {\"p50_ns\": %.1f, \"p99_ns\": %.1f, \"p999_ns\": %.1f, \"min_ns\": %.1f}", key, p.p50, p.p99,
         p.p999, p.min);
}

/* ------------------------------------------------------------------------------------------------ ping-pong */
/* The same exchange through the inline core only (no bus call layer, no liveness): the protocol's own cost. */
static void core_respond(kiln_bus_chan *ch, size_t n) {
  kiln_ring_prod *p = kiln_bus_tx(ch);
  kiln_ring_cons *c = kiln_bus_rx(ch);
  for (size_t i = 0; i < n; i++) {
    const kiln_rec *q;
    while (kiln_ring_peek(c, &q) == KILN_EAGAIN) _mm_pause(); /* as the bus's own spin (src/bus/bus_chan.c) */
    kiln_rec *w;
    while (kiln_ring_acquire(p, 32, &w) == KILN_EAGAIN) {
    }
    memcpy(kiln_rec_data(w), kiln_rec_data(q), 32);
    uint64_t corr = q->corr;
    kiln_ring_release(c);
    kiln_ring_commit(p, w, 32, 2, corr);
  }
}

static void core_initiate(kiln_bus_chan *ch, uint64_t *ticks, size_t n) {
  kiln_ring_prod *p = kiln_bus_tx(ch);
  kiln_ring_cons *c = kiln_bus_rx(ch);
  static const uint8_t msg[32] = "ping-pong 32 bytes of payload..";
  for (size_t i = 0; i < n; i++) {
    uint64_t t0 = tsc_now();
    kiln_rec *w;
    while (kiln_ring_acquire(p, 32, &w) == KILN_EAGAIN) {
    }
    memcpy(kiln_rec_data(w), msg, 32);
    kiln_ring_commit(p, w, 32, 1, i);
    const kiln_rec *q;
    while (kiln_ring_peek(c, &q) == KILN_EAGAIN) _mm_pause(); /* as the bus's own spin (src/bus/bus_chan.c) */
    int ok = q->corr == i;
    kiln_ring_release(c);
    ticks[i] = tsc_now() - t0;
    if (!ok) die("wrong response");
  }
}

static void pingpong(int rounds, size_t n) {
  char path[108];
  snprintf(path, sizeof path, "/tmp/kiln-bench-pp-%d.sock", (int)getpid());
  raw_line *line = shared_line();
  kiln_bus *b;
  kiln_bus_opts o = {.ring_bytes = 1 << 16, .max_clients = 1, .spin = 1ll << 40}; /* spin: never sleep here */
  if (kiln_bus_listen(&b, path, &o) != KILN_OK) die("listen");
  pid_t child = fork();
  if (child == 0) { /* responder on CPU 1 */
    pin_cpu(1);
    kiln_bus_chan *ch;
    if (kiln_bus_connect(&ch, path, &o, 5000000000ll) != KILN_OK) die("connect");
    uint64_t base = 0;
    for (int r = 0; r < rounds; r++) {
      raw_respond(line, n, &base);
      for (size_t i = 0; i < n; i++) {
        const kiln_rec *q;
        if (kiln_bus_peek(ch, &q, -1) != KILN_OK) die("peek");
        uint8_t buf[32];
        memcpy(buf, kiln_rec_data(q), 32);
        uint64_t corr = q->corr;
        kiln_bus_release(ch);
        if (kiln_bus_send(ch, buf, 32, 2, corr, -1) != KILN_OK) die("send");
      }
      core_respond(ch, n);
    }
    kiln_bus_chan_close(ch);
    _exit(0);
  }
  pin_cpu(0);
  kiln_bus_chan *ch;
  if (kiln_bus_accept(b, 5000000000ll, &ch) != KILN_OK) die("accept");
  uint64_t *raw = malloc(n * sizeof *raw), *bus = malloc(n * sizeof *bus), *core = malloc(n * sizeof *core);
  uint64_t *all_raw = malloc(rounds * n * sizeof *raw), *all_bus = malloc(rounds * n * sizeof *bus);
  uint64_t *all_core = malloc(rounds * n * sizeof *core);
  if (!raw || !bus || !core || !all_raw || !all_bus || !all_core) die("malloc");
  uint64_t base = 0;
  uint8_t msg[32] = "ping-pong 32 bytes of payload..";
  for (int r = 0; r < rounds; r++) {
    raw_initiate(line, raw, n, &base);
    for (size_t i = 0; i < n; i++) {
      uint64_t t0 = tsc_now();
      if (kiln_bus_send(ch, msg, 32, 1, i, -1) != KILN_OK) die("send");
      const kiln_rec *a;
      if (kiln_bus_peek(ch, &a, -1) != KILN_OK) die("peek");
      int ok = a->corr == i && a->size == 32;
      kiln_bus_release(ch);
      bus[i] = tsc_now() - t0;
      if (!ok) die("wrong response");
    }
    core_initiate(ch, core, n);
    memcpy(all_raw + r * n, raw, n * sizeof *raw);
    memcpy(all_bus + r * n, bus, n * sizeof *bus);
    memcpy(all_core + r * n, core, n * sizeof *core);
    pct pr = percentiles(raw, n, g_tpn), pb = percentiles(bus, n, g_tpn), pc = percentiles(core, n, g_tpn);
    printf("{\"bench\": \"pingpong\", \"round\": %d, \"n\": %zu, ", r, n);
    print_pct("raw", pr);
    printf(", ");
    print_pct("bus", pb);
    printf(", ");
    print_pct("core", pc);
    printf(", \"p50_minus_raw_ns\": %.1f, \"core_p50_minus_raw_ns\": %.1f}\n", pb.p50 - pr.p50, pc.p50 - pr.p50);
    fflush(stdout);
  }
  if (wait_child(child)) die("responder failed");
  pct pr = percentiles(all_raw, rounds * n, g_tpn), pb = percentiles(all_bus, rounds * n, g_tpn);
  pct pc = percentiles(all_core, rounds * n, g_tpn);
  printf("{\"bench\": \"pingpong\", \"round\": \"all\", \"n\": %zu, ", rounds * n);
  print_pct("raw", pr);
  printf(", ");
  print_pct("bus", pb);
  printf(", ");
  print_pct("core", pc);
  printf(", \"p50_minus_raw_ns\": %.1f, \"core_p50_minus_raw_ns\": %.1f}\n", pb.p50 - pr.p50, pc.p50 - pr.p50);
  kiln_bus_chan_close(ch);
  kiln_bus_close(b);
}

/* ------------------------------------------------------------------------------------------------ streaming */
enum { MODE_TOUCH = 1, MODE_FULL = 2, TYPE_FRAME = 1, TYPE_END = 9 };

/* Streams 1 KiB frames until `stop` says phase `phase` is over (checked every 256 frames), then sends an end
 * record. Frame i starts with the u64 i; in full mode the rest is a template copied in full. */
static int stream_frames(kiln_bus_chan *ch, int mode, _Atomic uint64_t *stop, uint64_t phase) {
  kiln_ring_prod *p = kiln_bus_tx(ch);
  static uint64_t tmpl[FRAME / 8];
  for (int k = 0; k < FRAME / 8; k++) tmpl[k] = 0x0101010101010101ull * (uint64_t)k;
  for (uint64_t i = 0;; i++) {
    if ((i & 255) == 0 && stop && atomic_load_explicit(stop, memory_order_relaxed) >= phase) break;
    kiln_rec *w;
    int rc;
    while ((rc = kiln_ring_acquire(p, FRAME, &w)) == KILN_EAGAIN)
      if ((rc = kiln_bus_wait_writable(ch, FRAME, -1)) != KILN_OK) return rc;
    if (rc != KILN_OK) return rc;
    uint64_t *d = kiln_rec_data(w);
    if (mode == MODE_FULL) memcpy(d, tmpl, FRAME);
    d[0] = i;
    kiln_ring_commit(p, w, FRAME, TYPE_FRAME, 0);
  }
  if (kiln_bus_send(ch, "", 0, TYPE_END, 0, -1) != KILN_OK) return 1;
  return kiln_bus_flush(ch);
}

typedef struct stream_result {
  uint64_t frames;
  double seconds;
  int ok;
} stream_result;

static stream_result consume_frames(kiln_bus_chan *ch, int mode, double seconds, _Atomic uint64_t *stop,
                                    uint64_t phase) {
  kiln_ring_cons *c = kiln_bus_rx(ch);
  stream_result res = {0, 0, 1};
  int64_t t0 = 0, t_end = 0;
  uint64_t expect = 0, sink = 0;
  int stopped = 0;
  for (;;) {
    const kiln_rec *r;
    int rc = kiln_ring_peek(c, &r);
    if (rc == KILN_EAGAIN) {
      if (kiln_bus_wait_readable(ch, -1) != KILN_OK) die("wait");
      continue;
    }
    if (rc != KILN_OK) die("peek");
    if (r->type == TYPE_END) {
      kiln_ring_release(c);
      break;
    }
    const uint64_t *d = kiln_rec_data(r);
    if (d[0] != expect) res.ok = 0;
    if (mode == MODE_FULL) {
      uint64_t s = 0;
      for (int k = 1; k < FRAME / 8; k++) s += d[k]; /* read every byte of the frame */
      sink += s;
    }
    expect++;
    kiln_ring_release(c);
    if (!stopped) {
      if (expect == 1) t0 = mono_ns();
      if ((expect & 1023) == 0) {
        int64_t now = mono_ns();
        if (now - t0 >= (int64_t)(seconds * 1e9)) {
          t_end = now;
          res.frames = expect - 1; /* frames after the first, over t_end - t0 */
          stopped = 1;
          atomic_store_explicit(stop, phase, memory_order_relaxed);
        }
      }
    }
  }
  if (mode == MODE_FULL) {
    /* each frame's words 1..127 sum to 0x0101..01 * (1 + ... + 127) */
    uint64_t per = 0x0101010101010101ull * (127ull * 128 / 2);
    if (sink != per * expect) res.ok = 0;
  }
  res.seconds = (double)(t_end - t0) / 1e9;
  return res;
}

static void c2c(int rounds, double seconds) {
  char path[108];
  snprintf(path, sizeof path, "/tmp/kiln-bench-c2c-%d.sock", (int)getpid());
  raw_line *line = shared_line();
  kiln_bus *b;
  kiln_bus_opts o = {.ring_bytes = RING, .max_clients = 1, .batch = 32, .spin = -1};
  if (kiln_bus_listen(&b, path, &o) != KILN_OK) die("listen");
  const size_t n_raw = 20000;
  pid_t child = fork();
  if (child == 0) { /* producer on CPU 1 */
    pin_cpu(1);
    kiln_bus_chan *ch;
    if (kiln_bus_connect(&ch, path, &o, 5000000000ll) != KILN_OK) die("connect");
    uint64_t base = 0, phase = 0;
    for (int r = 0; r < rounds; r++) {
      raw_respond(line, n_raw, &base);
      for (int mode = MODE_TOUCH; mode <= MODE_FULL; mode++)
        if (stream_frames(ch, mode, &line->stop, ++phase) != KILN_OK) die("stream");
    }
    kiln_bus_chan_close(ch);
    _exit(0);
  }
  pin_cpu(0);
  kiln_bus_chan *ch;
  if (kiln_bus_accept(b, 5000000000ll, &ch) != KILN_OK) die("accept");
  uint64_t *raw = malloc(n_raw * sizeof *raw);
  if (!raw) die("malloc");
  uint64_t base = 0, phase = 0;
  for (int r = 0; r < rounds; r++) {
    raw_initiate(line, raw, n_raw, &base);
    pct pr = percentiles(raw, n_raw, g_tpn);
    for (int mode = MODE_TOUCH; mode <= MODE_FULL; mode++) {
      stream_result s = consume_frames(ch, mode, seconds, &line->stop, ++phase);
      double fps = (double)s.frames / s.seconds;
      printf("{\"bench\": \"c2c\", \"round\": %d, \"mode\": \"%s\", \"frame_bytes\": %d, \"ring_bytes\": %u, "
             "\"frames\": %llu, \"seconds\": %.3f, \"mframes_per_s\": %.2f, \"payload_gb_per_s\": %.2f, "
             "\"ok\": %s, \"raw_rtt_p50_ns\": %.1f}\n",
             r, mode == MODE_TOUCH ? "touch" : "full", FRAME, RING, (unsigned long long)s.frames, s.seconds,
             fps / 1e6, fps * FRAME / 1e9, s.ok ? "true" : "false", pr.p50);
      fflush(stdout);
    }
  }
  if (wait_child(child)) die("producer failed");
  kiln_bus_chan_close(ch);
  kiln_bus_close(b);
}

/* ------------------------------------------------------------------------------------------------ raw, produce */
static void raw_only(size_t n) {
  raw_line *line = shared_line();
  pid_t child = fork();
  if (child == 0) {
    pin_cpu(1);
    uint64_t base = 0;
    raw_respond(line, n, &base);
    _exit(0);
  }
  pin_cpu(0);
  uint64_t *raw = malloc(n * sizeof *raw);
  if (!raw) die("malloc");
  uint64_t base = 0;
  raw_initiate(line, raw, n, &base);
  wait_child(child);
  printf("{\"bench\": \"raw\", \"n\": %zu, ", n);
  print_pct("raw", percentiles(raw, n, g_tpn));
  printf("}\n");
}

static void produce(const char *path, int mode) {
  pin_cpu(0);
  kiln_bus_opts o = {.batch = 32, .spin = -1};
  kiln_bus_chan *ch;
  if (kiln_bus_connect(&ch, path, &o, 5000000000ll) != KILN_OK) die("connect");
  int rc = stream_frames(ch, mode, NULL, 0); /* until the consumer closes */
  kiln_bus_chan_close(ch);
  exit(rc == KILN_ECLOSED || rc == KILN_EPEERDEAD ? 0 : 1);
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc < 2) goto usage;
  g_tpn = tsc_per_ns();
  if (!strcmp(argv[1], "pingpong") && argc == 4) pingpong(atoi(argv[2]), (size_t)atoll(argv[3]));
  else if (!strcmp(argv[1], "c2c") && argc == 4) c2c(atoi(argv[2]), atof(argv[3]));
  else if (!strcmp(argv[1], "raw") && argc == 3) raw_only((size_t)atoll(argv[2]));
  else if (!strcmp(argv[1], "produce") && argc == 4) produce(argv[2], !strcmp(argv[3], "full") ? MODE_FULL : MODE_TOUCH);
  else goto usage;
  return 0;
usage:
  fprintf(stderr, "usage: bus_bench pingpong ROUNDS N | c2c ROUNDS SECONDS | raw N | produce SOCKET touch|full\n");
  return 2;
}
