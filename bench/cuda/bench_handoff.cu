/*
 * bench_handoff: what one kernel boundary of the decode graph costs, and whether a handoff through a counter in
 * global memory would cost less than programmatic dependent launch (docs/benchmarks.md, "Kernel boundaries").
 *
 * A CUDA graph chains N copies of a stage kernel shaped like a decode GEMV: a grid of B blocks an SM (held to B by
 * shared memory, as the GEMV is by its registers), each block streaming its share of BYTES of a large buffer with
 * its first loads issued before it waits for the previous stage, and each stage reading a value the previous one
 * wrote. Three handoffs:
 *   stream  plain stream order: a stage starts when the previous one has completed;
 *   pdl     programmatic dependent launch: a stage's blocks start as the previous stage's blocks leave the SMs and
 *           block in griddepcontrol.wait until that grid has completed and its memory is flushed (what kiln does);
 *   flag    launched as pdl, but a stage waits for a counter instead: each block of the previous stage adds one
 *           (release) after its stores, the last one publishes the step's epoch in a flag, and thread 0 of every
 *           block of the next stage polls the flag (acquire).
 * Reported per (handoff, BYTES, B): GPU time a stage (graph replays / N), that time less BYTES at the copy bandwidth
 * measured in the same run (the boundary's cost), and from %globaltimer stamps the median over stages of the time
 * from the previous stage's last block finishing its work to the first and to the last block of the next stage
 * being released. Every run's result is checked: stage k's value in block b is the sum of its slices so far.
 *
 * --gemv ROWSxK[:norm][:add|:swiglu],... also chains kiln's own decode GEMV (gemv.cu, PDL, as the decode graph
 * launches it) on those shapes, the weights of successive GEMVs from successive slices of the buffer, beside the
 * ideal kernel above (PDL, 2 blocks an SM) streaming the same bytes: what the GEMV costs beyond a kernel boundary.
 * norm: f32 input normalised in the prologue (the q/k/v and gate/up GEMVs), else a bf16 input (o, down); add and
 * swiglu: those epilogues (else store). The split of k is the GEMV's own choice (KILN_CUDA_GEMV_SPLIT).
 *
 *   bench_handoff [--stages N] [--reps R] [--mb 0,4,32] [--blocks 1,2] [--gemv SPECS] [--json FILE]
 * The JSON file is one document: device, CUDA driver version, date, commit (KILN_COMMIT, else "unknown"), command,
 * settings (the KILN_CUDA_* environment it ran under), a row per (handoff, MB, blocks an SM) and one per GEMV shape.
 */
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h> /* environ */

#include <algorithm>
#include <vector>

#define BENCH_NAME "bench_handoff"
#include "bench_common.h"

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/gemv.h"
#include "kiln/status.h"

#define THREADS 256
#define U 4 /* 16-byte loads a thread has in flight */


enum { MODE_STREAM, MODE_PDL, MODE_FLAG };
static const char *mode_name[] = {"stream", "pdl", "flag"};

struct stage_args {
  const uint4 *buf;  /* the stage's slice of the stream buffer */
  int64_t n16;       /* 16-byte units the stage reads (whole grid) */
  const float *prev; /* previous stage's per-block values (null for the first) */
  float *out;        /* this stage's per-block values */
  unsigned *cnt;     /* [stages] arrivals */
  unsigned long long *flag;        /* [stages] epoch of the last completed arrival round */
  const unsigned long long *epoch; /* this replay's epoch */
  unsigned long long *ts;          /* [stages][3][grid]: entry, release, work done */
  int slot, mode;
};

static __device__ __forceinline__ unsigned long long gtime(void) {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

static __global__ void epoch_kernel(unsigned long long *epoch) { *epoch += 1; }

static __global__ void __launch_bounds__(THREADS) stage_kernel(stage_args a) {
  /* the launch's dynamic shared memory is never touched: it only holds the grid to B blocks an SM */
  __shared__ float red[THREADS / 32];
  const int tid = threadIdx.x, b = blockIdx.x, nb = gridDim.x;
  const unsigned long long t0 = gtime();
  if (a.mode != MODE_STREAM) asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  const int64_t per = (a.n16 + nb - 1) / nb, i0 = (int64_t)b * per, i1 = a.n16 < i0 + per ? a.n16 : i0 + per;
  uint4 v[U];
#pragma unroll
  for (int u = 0; u < U; u++) {
    const int64_t i = i0 + tid + (int64_t)u * THREADS;
    v[u] = i < i1 ? __ldcs(a.buf + i) : make_uint4(0, 0, 0, 0);
  }
  unsigned long long ep = 0;
  if (a.mode == MODE_PDL) asm volatile("griddepcontrol.wait;" ::: "memory");
  if (a.mode == MODE_FLAG) {
    if (tid == 0) {
      ep = *(volatile const unsigned long long *)a.epoch;
      if (a.slot > 0) { /* a poll that sees nothing for 2 s traps: an error, not a hang */
        unsigned long long f;
        do {
          asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(f) : "l"(a.flag + a.slot - 1) : "memory");
          if (gtime() - t0 > 2000000000ull) __trap();
        } while (f != ep);
      }
    }
    __syncthreads();
  }
  const unsigned long long t1 = gtime();
  float acc = 0.f;
#pragma unroll
  for (int u = 0; u < U; u++) acc += __uint_as_float(v[u].x) + __uint_as_float(v[u].y) +
                                     __uint_as_float(v[u].z) + __uint_as_float(v[u].w);
  for (int64_t j = i0 + tid + (int64_t)U * THREADS; j < i1; j += (int64_t)U * THREADS) {
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int64_t i = j + (int64_t)u * THREADS;
      v[u] = i < i1 ? __ldcs(a.buf + i) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < U; u++) acc += __uint_as_float(v[u].x) + __uint_as_float(v[u].y) +
                                       __uint_as_float(v[u].z) + __uint_as_float(v[u].w);
  }
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if ((tid & 31) == 0) red[tid >> 5] = acc;
  __syncthreads();
  if (tid == 0) {
    float s = a.prev ? __ldcg(a.prev + b) : 0.f; /* the dependency on the previous stage */
    for (int w = 0; w < THREADS / 32; w++) s += red[w];
    a.out[b] = s;
    const unsigned long long t2 = gtime();
    a.ts[((int64_t)a.slot * 3 + 0) * nb + b] = t0;
    a.ts[((int64_t)a.slot * 3 + 1) * nb + b] = t1;
    a.ts[((int64_t)a.slot * 3 + 2) * nb + b] = t2;
    if (a.mode == MODE_FLAG) {
      __threadfence();
      if (atomicAdd(a.cnt + a.slot, 1u) == (unsigned)nb - 1) { /* the last block: every store is before this */
        a.cnt[a.slot] = 0; /* the next arrivals are the next replay's, after this graph has completed */
        __threadfence();
        asm volatile("st.release.gpu.global.u64 [%0], %1;" ::"l"(a.flag + a.slot), "l"(ep) : "memory");
      }
    }
  }
}

static std::vector<double> parse_list(const char *s) {
  std::vector<double> v;
  for (const char *p = s; *p;) {
    char *e;
    v.push_back(strtod(p, &e));
    if (e == p) return {};
    p = *e == ',' ? e + 1 : e;
  }
  return v;
}

static double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

/* What the chains share: the stream buffer, the per-block values and stamps, the flags, the timing events. */
struct bench {
  uint4 *buf;
  size_t buf_bytes;
  int n_sm, smem_sm, stages, reps;
  double copy_gbs;
  float *vals;
  unsigned *cnt;
  unsigned long long *flag, *epoch, *ts;
  cudaStream_t st;
  cudaEvent_t e0, e1;
};

struct chain_result {
  double us, release_first, release_last;
  int bad;
};

/* Times graph replays of ge: microseconds a stage. */
static double time_graph(const bench &B, cudaGraphExec_t ge) {
  float ms = 0.f;
  for (int i = 0; i < 3; i++) CK(cudaGraphLaunch(ge, B.st));
  CK(cudaEventRecord(B.e0, B.st));
  for (int i = 0; i < B.reps; i++) CK(cudaGraphLaunch(ge, B.st));
  CK(cudaEventRecord(B.e1, B.st));
  CK(cudaEventSynchronize(B.e1));
  CK(cudaEventElapsedTime(&ms, B.e0, B.e1));
  return ms * 1e3 / B.reps / B.stages;
}

/* The chain of stage kernels with one handoff: its time a stage, the release medians, and the check of its values. */
static void stage_chain(const bench &B, int mode, double mb, int per_sm, chain_result *r) {
  const int max_grid = 4 * B.n_sm, grid = per_sm * B.n_sm;
  const size_t smem = (size_t)(B.smem_sm / per_sm) - 2048; /* no more than per_sm blocks an SM */
  const int64_t n16 = (int64_t)(mb * 1048576.0) / 16;
  const int64_t slices = n16 ? (int64_t)(B.buf_bytes / 16) / n16 : 1;
  cudaGraph_t g;
  cudaGraphExec_t ge;
  CK(cudaStreamBeginCapture(B.st, cudaStreamCaptureModeThreadLocal));
  epoch_kernel<<<1, 1, 0, B.st>>>(B.epoch);
  CK(cudaGetLastError());
  for (int k = 0; k < B.stages; k++) {
    stage_args a;
    a.buf = B.buf + (k % slices) * n16;
    a.n16 = n16;
    a.prev = k ? B.vals + ((k - 1) % 2) * max_grid : NULL;
    a.out = B.vals + (k % 2) * max_grid;
    a.cnt = B.cnt;
    a.flag = B.flag;
    a.epoch = B.epoch;
    a.ts = B.ts;
    a.slot = k;
    a.mode = mode;
    cudaLaunchConfig_t cfg = {};
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.gridDim = dim3(grid);
    cfg.blockDim = dim3(THREADS);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = B.st;
    cfg.attrs = at;
    cfg.numAttrs = mode != MODE_STREAM && k > 0 ? 1 : 0; /* the first stage waits for the epoch normally */
    CK(cudaLaunchKernelEx(&cfg, stage_kernel, a));
  }
  CK(cudaStreamEndCapture(B.st, &g));
  CK(cudaGraphInstantiate(&ge, g, 0));
  r->us = time_graph(B, ge);
  /* the last replay's values and stamps */
  std::vector<float> out(grid);
  CK(cudaMemcpy(out.data(), B.vals + ((B.stages - 1) % 2) * max_grid, sizeof(float) * grid,
                   cudaMemcpyDeviceToHost));
  const int64_t per = (n16 + grid - 1) / grid;
  r->bad = 0;
  for (int b = 0; b < grid; b++) {
    const int64_t i0 = b * per, i1 = std::min(n16, i0 + per), n = i1 > i0 ? i1 - i0 : 0;
    const double want = 4.0 * (double)n * B.stages;
    /* f32 sums of ones are exact to 2^24; past that a tolerance far below one stage's share (1 / stages), which a
     * stage that read its predecessor's value too early would miss by */
    if (fabs(out[b] - want) > 1e-5 * want && r->bad++ < 5)
      fprintf(stderr, "bench_handoff: %s %.0f MB block %d: %.1f, want %.1f\n", mode_name[mode], mb, b,
              (double)out[b], want);
  }
  std::vector<unsigned long long> t(3 * (size_t)B.stages * grid);
  CK(cudaMemcpy(t.data(), B.ts, sizeof(unsigned long long) * t.size(), cudaMemcpyDeviceToHost));
  std::vector<double> first, last;
  for (int k = 1; k < B.stages; k++) {
    unsigned long long done = 0, r0 = ~0ull, r1 = 0;
    for (int b = 0; b < grid; b++) {
      done = std::max(done, t[((size_t)(k - 1) * 3 + 2) * grid + b]);
      r0 = std::min(r0, t[((size_t)k * 3 + 1) * grid + b]);
      r1 = std::max(r1, t[((size_t)k * 3 + 1) * grid + b]);
    }
    first.push_back(((double)r0 - (double)done) * 1e-3);
    last.push_back(((double)r1 - (double)done) * 1e-3);
  }
  r->release_first = median(first);
  r->release_last = median(last);
  CK(cudaGraphExecDestroy(ge));
  CK(cudaGraphDestroy(g));
}

/* A GEMV shape of --gemv: ROWSxK[:norm][:add|:swiglu]. */
struct gemv_spec {
  int64_t rows, k;
  bool norm;
  kiln_cuda_gemv_mode mode;
  char name[64];
};

static int parse_gemv(const char *s, std::vector<gemv_spec> *out) {
  while (*s) {
    gemv_spec g = {};
    char *e;
    g.rows = strtoll(s, &e, 10);
    if (e == s || *e != 'x') return -1;
    s = e + 1;
    g.k = strtoll(s, &e, 10);
    if (e == s) return -1;
    g.mode = KILN_GEMV_STORE;
    for (s = e; *s == ':';) {
      const char *w = s + 1;
      const size_t n = strcspn(w, ":,");
      if (n == 4 && !strncmp(w, "norm", 4)) g.norm = true;
      else if (n == 3 && !strncmp(w, "add", 3)) g.mode = KILN_GEMV_ADD;
      else if (n == 6 && !strncmp(w, "swiglu", 6)) g.mode = KILN_GEMV_SWIGLU;
      else return -1;
      s = w + n;
    }
    if (*s == ',') s++;
    else if (*s) return -1;
    if (g.rows < 2 || g.k < 8 || g.k % 8 || g.k > 65536 || g.rows * g.k * 2 > (int64_t)1 << 28 ||
        (g.mode == KILN_GEMV_SWIGLU && g.rows % 2))
      return -1;
    snprintf(g.name, sizeof g.name, "%lldx%lld%s%s", (long long)g.rows, (long long)g.k, g.norm ? ":norm" : "",
             g.mode == KILN_GEMV_ADD ? ":add" : g.mode == KILN_GEMV_SWIGLU ? ":swiglu" : "");
    out->push_back(g);
  }
  return 0;
}

/* The chain of kiln GEMVs of one shape, launched as the decode graph launches them (PDL after the first): its time
 * a GEMV. Inputs: x f32 of ones (with unit norm weights) or bf16 from the buffer; outputs in scratch. */
static int gemv_chain(const bench &B, const gemv_spec &gs, float *x, float *norm_w, float *y, uint16_t *y16,
                      double *us) {
  const int64_t bytes = gs.rows * gs.k * 2, slices = (int64_t)B.buf_bytes / bytes;
  kiln_cuda_gemv_args a = {};
  a.n_rows = gs.rows;
  a.k = gs.k;
  if (gs.norm) a.x_f32 = x, a.norm_w = norm_w, a.eps = 1e-6f;
  else a.x_bf16 = (const uint16_t *)B.buf; /* bf16 pairs of 0 and 1.0 */
  a.mode = gs.mode;
  if (gs.mode == KILN_GEMV_SWIGLU) a.y_bf16 = y16;
  else a.y = y;
  /* one launch outside the capture first: the kernel's one-time setup (its shared-memory attribute) */
  a.w = (const uint16_t *)B.buf;
  int rc = kiln_cuda_gemv(&a, B.st);
  if (!rc && cudaStreamSynchronize(B.st) != cudaSuccess) rc = kiln_error(KILN_EDEVICE, "warm-up failed");
  if (rc) {
    fprintf(stderr, "bench_handoff: gemv %s: %s\n", gs.name, kiln_last_error());
    return 1;
  }
  cudaGraph_t g;
  cudaGraphExec_t ge;
  CK(cudaStreamBeginCapture(B.st, cudaStreamCaptureModeThreadLocal));
  for (int k = 0; k < B.stages && !rc; k++) {
    kiln_cuda__set_pdl(k > 0);
    a.w = (const uint16_t *)((const char *)B.buf + (k % slices) * bytes);
    rc = kiln_cuda_gemv(&a, B.st);
  }
  kiln_cuda__set_pdl(0);
  cudaError_t e = cudaStreamEndCapture(B.st, &g);
  if (rc) {
    fprintf(stderr, "bench_handoff: gemv %s: %s\n", gs.name, kiln_last_error());
    return 1;
  }
  CK(e);
  CK(cudaGraphInstantiate(&ge, g, 0));
  *us = time_graph(B, ge);
  CK(cudaGraphExecDestroy(ge));
  CK(cudaGraphDestroy(g));
  return 0;
}

/* Writes s as the inside of a JSON string (quotes and backslashes escaped, control characters dropped). */
static void json_text(FILE *f, const char *s) {
  for (const char *c = s; *c; c++) {
    if (*c == '"' || *c == '\\') fputc('\\', f);
    if ((unsigned char)*c >= 0x20) fputc(*c, f);
  }
}

int main(int argc, char **argv) {
  int stages = 200, reps = 20;
  std::vector<double> mbs = {0, 4, 32}, bps = {1, 2};
  std::vector<gemv_spec> gemvs;
  const char *json = NULL;
  for (int i = 1; i < argc; i++) {
    const bool more = i + 1 < argc;
    if (!strcmp(argv[i], "--stages") && more) stages = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--reps") && more) reps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--mb") && more) mbs = parse_list(argv[++i]);
    else if (!strcmp(argv[i], "--blocks") && more) bps = parse_list(argv[++i]);
    else if (!strcmp(argv[i], "--gemv") && more) {
      if (parse_gemv(argv[++i], &gemvs)) {
        fprintf(stderr, "bench_handoff: --gemv %s: expected ROWSxK[:norm][:add|:swiglu],... (k a multiple of 8, "
                        "at most 256 MiB a matrix)\n", argv[i]);
        return 2;
      }
    } else if (!strcmp(argv[i], "--json") && more) json = argv[++i];
    else {
      fprintf(stderr, "usage: bench_handoff [--stages N] [--reps R] [--mb 0,4,32] [--blocks 1,2] [--gemv SPECS] "
                      "[--json FILE]\n");
      return 2;
    }
  }
  if (stages < 2 || stages > 10000 || reps < 1 || mbs.empty() || bps.empty()) {
    fprintf(stderr, "bench_handoff: bad arguments\n");
    return 2;
  }
  for (double bp : bps)
    if (bp < 1 || bp > 4 || bp != (int)bp) {
      fprintf(stderr, "bench_handoff: blocks an SM: 1-4\n");
      return 2;
    }
  for (double mb : mbs)
    if (mb < 0 || mb > 64) {
      fprintf(stderr, "bench_handoff: MB: 0-64\n");
      return 2;
    }
  bench B = {};
  B.stages = stages;
  B.reps = reps;
  int dev = 0;
  cudaDeviceProp prop;
  CK(cudaGetDevice(&dev));
  CK(cudaGetDeviceProperties(&prop, dev));
  CK(cudaDeviceGetAttribute(&B.n_sm, cudaDevAttrMultiProcessorCount, dev));
  CK(cudaDeviceGetAttribute(&B.smem_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev));
  CK(cudaFuncSetAttribute(stage_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, B.smem_sm - 2048));

  /* the stream buffer: 1 GiB of 1.0f, read in turn by the stages so nothing is in L2 from an earlier one */
  B.buf_bytes = (size_t)1 << 30;
  CK(cudaMalloc(&B.buf, B.buf_bytes));
  {
    std::vector<float> ones(B.buf_bytes / 4 / 64, 1.0f);
    for (size_t off = 0; off < B.buf_bytes; off += ones.size() * 4)
      CK(cudaMemcpy((char *)B.buf + off, ones.data(), ones.size() * 4, cudaMemcpyHostToDevice));
  }
  /* copy bandwidth (read + write), as kiln's floor takes it */
  CK(cudaStreamCreateWithFlags(&B.st, cudaStreamNonBlocking));
  CK(cudaEventCreate(&B.e0));
  CK(cudaEventCreate(&B.e1));
  float ms = 0.f;
  const size_t half = B.buf_bytes / 2;
  CK(cudaMemcpyAsync((char *)B.buf + half, B.buf, half, cudaMemcpyDeviceToDevice, B.st));
  CK(cudaEventRecord(B.e0, B.st));
  for (int i = 0; i < 10; i++)
    CK(cudaMemcpyAsync((char *)B.buf + half, B.buf, half, cudaMemcpyDeviceToDevice, B.st));
  CK(cudaEventRecord(B.e1, B.st));
  CK(cudaEventSynchronize(B.e1));
  CK(cudaEventElapsedTime(&ms, B.e0, B.e1));
  B.copy_gbs = 2.0 * half * 10 / (ms * 1e-3) / 1e9;
  CK(cudaMemcpy((char *)B.buf + half, B.buf, half, cudaMemcpyDeviceToDevice)); /* back to all ones */

  const int max_grid = 4 * B.n_sm;
  CK(cudaMalloc(&B.vals, sizeof(float) * 2 * max_grid));
  CK(cudaMalloc(&B.cnt, sizeof(unsigned) * stages));
  CK(cudaMalloc(&B.flag, sizeof(unsigned long long) * stages));
  CK(cudaMalloc(&B.epoch, sizeof(unsigned long long)));
  CK(cudaMalloc(&B.ts, sizeof(unsigned long long) * 3 * (size_t)stages * max_grid));
  CK(cudaMemset(B.cnt, 0, sizeof(unsigned) * stages));
  CK(cudaMemset(B.flag, 0, sizeof(unsigned long long) * stages));
  CK(cudaMemset(B.epoch, 0, sizeof(unsigned long long)));
  FILE *jf = json ? fopen(json, "w") : NULL;
  if (json && !jf) {
    fprintf(stderr, "bench_handoff: cannot write %s\n", json);
    return 1;
  }
  if (jf) {
    int drv = 0;
    CK(cudaDriverGetVersion(&drv));
    char date[32];
    const time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    const char *commit = getenv("KILN_COMMIT");
    fprintf(jf, "{\"device\": \"");
    json_text(jf, prop.name);
    fprintf(jf, "\", \"cuda_driver\": %d, \"date\": \"%s\", \"commit\": \"", drv, date);
    json_text(jf, commit && *commit ? commit : "unknown");
    fprintf(jf, "\", \"command\": \"");
    for (int i = 0; i < argc; i++) { /* the program and the JSON file by their names only: no machine's paths */
      if (i) fputc(' ', jf);
      const bool path = i == 0 || (i > 1 && !strcmp(argv[i - 1], "--json"));
      json_text(jf, path && strrchr(argv[i], '/') ? strrchr(argv[i], '/') + 1 : argv[i]);
    }
    /* the tuning switches the GEMV rows ran under (gemv.cu reads them), so the file says what it measured */
    fprintf(jf, "\", \"settings\": \"");
    int n_set = 0;
    for (char **e = environ; *e; e++)
      if (!strncmp(*e, "KILN_CUDA_", 10)) {
        if (n_set++) fputc(' ', jf);
        json_text(jf, *e);
      }
    fprintf(jf, "\", \"stages\": %d, \"reps\": %d, \"copy_gb_s\": %.1f, \"rows\": [", stages, reps, B.copy_gbs);
  }
  int rows = 0, bad = 0;
  printf("%s, %d SMs, copy %.0f GB/s, %d stages a graph, %d replays\n", prop.name, B.n_sm, B.copy_gbs, stages,
         reps);
  printf("%-7s %7s %6s %10s %10s %12s %12s\n", "handoff", "MB", "B/SM", "us/stage", "over_bytes", "release_1st",
         "release_last");
  for (double bp : bps)
    for (double mb : mbs)
      for (int mode = MODE_STREAM; mode <= MODE_FLAG; mode++) {
        chain_result r;
        stage_chain(B, mode, mb, (int)bp, &r);
        bad += r.bad;
        const double bytes_us = mb * 1048576.0 / (B.copy_gbs * 1e3);
        printf("%-7s %7.1f %6d %10.3f %10.3f %12.3f %12.3f\n", mode_name[mode], mb, (int)bp, r.us, r.us - bytes_us,
               r.release_first, r.release_last);
        if (jf)
          fprintf(jf,
                  "%s\n  {\"handoff\": \"%s\", \"mb\": %.1f, \"blocks_per_sm\": %d, \"us_per_stage\": %.4f, "
                  "\"us_over_bytes\": %.4f, \"release_first_us\": %.4f, \"release_last_us\": %.4f}",
                  rows++ ? "," : "", mode_name[mode], mb, (int)bp, r.us, r.us - bytes_us, r.release_first,
                  r.release_last);
      }
  if (!gemvs.empty()) {
    float *x, *norm_w, *y;
    uint16_t *y16;
    int64_t most = 0;
    for (const gemv_spec &g : gemvs) most = std::max(most, std::max(g.rows, g.k));
    CK(cudaMalloc(&x, sizeof(float) * most));
    CK(cudaMalloc(&norm_w, sizeof(float) * most));
    CK(cudaMalloc(&y, sizeof(float) * most));
    CK(cudaMalloc(&y16, sizeof(uint16_t) * most));
    {
      std::vector<float> ones(most, 1.0f);
      CK(cudaMemcpy(x, ones.data(), sizeof(float) * most, cudaMemcpyHostToDevice));
      CK(cudaMemcpy(norm_w, ones.data(), sizeof(float) * most, cudaMemcpyHostToDevice));
      CK(cudaMemset(y, 0, sizeof(float) * most));
    }
    printf("%-28s %9s %10s %10s %10s %10s\n", "gemv (PDL chain)", "MB", "us/gemv", "ideal_us", "bytes_us",
           "over_ideal");
    for (const gemv_spec &g : gemvs) {
      const double mb = g.rows * g.k * 2 / 1048576.0, bytes_us = mb * 1048576.0 / (B.copy_gbs * 1e3);
      double us = 0.0;
      chain_result ideal;
      if (gemv_chain(B, g, x, norm_w, y, y16, &us)) return 1;
      stage_chain(B, MODE_PDL, mb, 2, &ideal);
      bad += ideal.bad;
      printf("%-28s %9.2f %10.3f %10.3f %10.3f %10.3f\n", g.name, mb, us, ideal.us, bytes_us, us - ideal.us);
      if (jf)
        fprintf(jf,
                "%s\n  {\"gemv\": \"%s\", \"mb\": %.2f, \"us_per_gemv\": %.4f, \"ideal_us\": %.4f, "
                "\"bytes_us\": %.4f, \"us_over_ideal\": %.4f}",
                rows++ ? "," : "", g.name, mb, us, ideal.us, bytes_us, us - ideal.us);
    }
  }
  if (jf) {
    fprintf(jf, "\n]}\n");
    fclose(jf);
  }
  if (bad) fprintf(stderr, "bench_handoff: %d wrong values\n", bad);
  return bad ? 1 : 0;
}
