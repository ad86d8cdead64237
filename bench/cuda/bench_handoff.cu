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
 *   bench_handoff [--stages N] [--reps R] [--mb 0,4,32] [--blocks 1,2] [--json FILE]
 * The JSON file is one document: device, CUDA driver version, date, commit (KILN_COMMIT, else "unknown"), command
 * and a row per (handoff, MB, blocks an SM).
 */
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <algorithm>
#include <vector>

#define THREADS 256
#define U 4 /* 16-byte loads a thread has in flight */

#define CHECK(x)                                                                                                   \
  do {                                                                                                             \
    cudaError_t e_ = (x);                                                                                          \
    if (e_ != cudaSuccess) {                                                                                       \
      fprintf(stderr, "bench_handoff: %s: %s (%s:%d)\n", #x, cudaGetErrorString(e_), __FILE__, __LINE__);         \
      return 1;                                                                                                    \
    }                                                                                                              \
  } while (0)

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

int main(int argc, char **argv) {
  int stages = 200, reps = 20;
  std::vector<double> mbs = {0, 4, 32}, bps = {1, 2};
  const char *json = NULL;
  for (int i = 1; i < argc; i++) {
    const bool more = i + 1 < argc;
    if (!strcmp(argv[i], "--stages") && more) stages = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--reps") && more) reps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--mb") && more) mbs = parse_list(argv[++i]);
    else if (!strcmp(argv[i], "--blocks") && more) bps = parse_list(argv[++i]);
    else if (!strcmp(argv[i], "--json") && more) json = argv[++i];
    else {
      fprintf(stderr, "usage: bench_handoff [--stages N] [--reps R] [--mb 0,4,32] [--blocks 1,2] [--json FILE]\n");
      return 2;
    }
  }
  if (stages < 2 || stages > 10000 || reps < 1 || mbs.empty() || bps.empty()) {
    fprintf(stderr, "bench_handoff: bad arguments\n");
    return 2;
  }
  int dev = 0, n_sm = 0, smem_sm = 0;
  cudaDeviceProp prop;
  CHECK(cudaGetDevice(&dev));
  CHECK(cudaGetDeviceProperties(&prop, dev));
  CHECK(cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, dev));
  CHECK(cudaDeviceGetAttribute(&smem_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev));
  CHECK(cudaFuncSetAttribute(stage_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_sm - 2048));

  /* the stream buffer: 1 GiB of 1.0f, read in turn by the stages so nothing is in L2 from an earlier one */
  const size_t buf_bytes = (size_t)1 << 30;
  uint4 *buf;
  CHECK(cudaMalloc(&buf, buf_bytes));
  {
    std::vector<float> ones(buf_bytes / 4 / 64, 1.0f);
    for (size_t off = 0; off < buf_bytes; off += ones.size() * 4)
      CHECK(cudaMemcpy((char *)buf + off, ones.data(), ones.size() * 4, cudaMemcpyHostToDevice));
  }
  /* copy bandwidth (read + write), as kiln's floor takes it */
  cudaStream_t st;
  cudaEvent_t e0, e1;
  CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  CHECK(cudaEventCreate(&e0));
  CHECK(cudaEventCreate(&e1));
  float ms = 0.f;
  const size_t half = buf_bytes / 2;
  CHECK(cudaMemcpyAsync((char *)buf + half, buf, half, cudaMemcpyDeviceToDevice, st));
  CHECK(cudaEventRecord(e0, st));
  for (int i = 0; i < 10; i++) CHECK(cudaMemcpyAsync((char *)buf + half, buf, half, cudaMemcpyDeviceToDevice, st));
  CHECK(cudaEventRecord(e1, st));
  CHECK(cudaEventSynchronize(e1));
  CHECK(cudaEventElapsedTime(&ms, e0, e1));
  const double copy_gbs = 2.0 * half * 10 / (ms * 1e-3) / 1e9;
  CHECK(cudaMemcpy((char *)buf + half, buf, half, cudaMemcpyDeviceToDevice)); /* back to all ones */

  const int max_grid = 4 * n_sm;
  float *vals;
  unsigned *cnt;
  unsigned long long *flag, *epoch, *ts;
  CHECK(cudaMalloc(&vals, sizeof(float) * 2 * max_grid));
  CHECK(cudaMalloc(&cnt, sizeof(unsigned) * stages));
  CHECK(cudaMalloc(&flag, sizeof(unsigned long long) * stages));
  CHECK(cudaMalloc(&epoch, sizeof(unsigned long long)));
  CHECK(cudaMalloc(&ts, sizeof(unsigned long long) * 3 * (size_t)stages * max_grid));
  CHECK(cudaMemset(cnt, 0, sizeof(unsigned) * stages));
  CHECK(cudaMemset(flag, 0, sizeof(unsigned long long) * stages));
  CHECK(cudaMemset(epoch, 0, sizeof(unsigned long long)));
  FILE *jf = json ? fopen(json, "w") : NULL;
  if (json && !jf) {
    fprintf(stderr, "bench_handoff: cannot write %s\n", json);
    return 1;
  }
  if (jf) {
    int drv = 0;
    CHECK(cudaDriverGetVersion(&drv));
    char date[32];
    const time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    const char *commit = getenv("KILN_COMMIT");
    fprintf(jf, "{\"device\": \"%s\", \"cuda_driver\": %d, \"date\": \"%s\", \"commit\": \"%s\", \"command\": \"",
            prop.name, drv, date, commit && *commit ? commit : "unknown");
    for (int i = 0; i < argc; i++) { /* the program by its name only: no path of the machine it ran on */
      if (i) fputc(' ', jf);
      const char *arg = i ? argv[i] : strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
      for (const char *c = arg; *c; c++) {
        if (*c == '"' || *c == '\\') fputc('\\', jf);
        if ((unsigned char)*c >= 0x20) fputc(*c, jf);
      }
    }
    fprintf(jf, "\", \"stages\": %d, \"reps\": %d, \"copy_gb_s\": %.1f, \"rows\": [", stages, reps, copy_gbs);
  }
  int rows = 0;
  printf("%s, %d SMs, copy %.0f GB/s, %d stages a graph, %d replays\n", prop.name, n_sm, copy_gbs, stages, reps);
  printf("%-7s %7s %6s %10s %10s %12s %12s\n", "handoff", "MB", "B/SM", "us/stage", "over_bytes", "release_1st",
         "release_last");
  int bad = 0;
  for (double bp : bps)
    for (double mb : mbs)
      for (int mode = MODE_STREAM; mode <= MODE_FLAG; mode++) {
        const int per_sm = (int)bp;
        if (per_sm < 1 || per_sm > 4 || mb < 0 || mb > 64) {
          fprintf(stderr, "bench_handoff: blocks an SM 1-4, MB 0-64\n");
          return 2;
        }
        const int grid = per_sm * n_sm;
        const size_t smem = (size_t)(smem_sm / per_sm) - 2048; /* no more than per_sm blocks an SM */
        const int64_t n16 = (int64_t)(mb * 1048576.0) / 16;
        const int64_t slices = n16 ? (int64_t)(buf_bytes / 16) / n16 : 1;
        cudaGraph_t g;
        cudaGraphExec_t ge;
        CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
        epoch_kernel<<<1, 1, 0, st>>>(epoch);
        CHECK(cudaGetLastError());
        for (int k = 0; k < stages; k++) {
          stage_args a;
          a.buf = buf + (k % slices) * n16;
          a.n16 = n16;
          a.prev = k ? vals + ((k - 1) % 2) * max_grid : NULL;
          a.out = vals + (k % 2) * max_grid;
          a.cnt = cnt;
          a.flag = flag;
          a.epoch = epoch;
          a.ts = ts;
          a.slot = k;
          a.mode = mode;
          cudaLaunchConfig_t cfg = {};
          cudaLaunchAttribute at[1];
          at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
          at[0].val.programmaticStreamSerializationAllowed = 1;
          cfg.gridDim = dim3(grid);
          cfg.blockDim = dim3(THREADS);
          cfg.dynamicSmemBytes = smem;
          cfg.stream = st;
          cfg.attrs = at;
          cfg.numAttrs = mode != MODE_STREAM && k > 0 ? 1 : 0; /* the first stage waits for the epoch normally */
          CHECK(cudaLaunchKernelEx(&cfg, stage_kernel, a));
        }
        CHECK(cudaStreamEndCapture(st, &g));
        CHECK(cudaGraphInstantiate(&ge, g, 0));
        for (int i = 0; i < 3; i++) CHECK(cudaGraphLaunch(ge, st));
        CHECK(cudaEventRecord(e0, st));
        for (int i = 0; i < reps; i++) CHECK(cudaGraphLaunch(ge, st));
        CHECK(cudaEventRecord(e1, st));
        CHECK(cudaEventSynchronize(e1));
        CHECK(cudaEventElapsedTime(&ms, e0, e1));
        const double us = ms * 1e3 / reps / stages, bytes_us = n16 * 16.0 / (copy_gbs * 1e3);
        /* the last replay's values and stamps */
        std::vector<float> out(grid);
        CHECK(cudaMemcpy(out.data(), vals + ((stages - 1) % 2) * max_grid, sizeof(float) * grid,
                         cudaMemcpyDeviceToHost));
        const int64_t per = (n16 + grid - 1) / grid;
        for (int b = 0; b < grid; b++) {
          const int64_t i0 = b * per, i1 = std::min(n16, i0 + per), n = i1 > i0 ? i1 - i0 : 0;
          const double want = 4.0 * (double)n * stages;
          if (out[b] != (float)want) {
            if (bad++ < 5)
              fprintf(stderr, "bench_handoff: %s %.0f MB block %d: %.1f, want %.1f\n", mode_name[mode], mb, b,
                      (double)out[b], want);
          }
        }
        std::vector<unsigned long long> t(3 * (size_t)stages * grid);
        CHECK(cudaMemcpy(t.data(), ts, sizeof(unsigned long long) * t.size(), cudaMemcpyDeviceToHost));
        std::vector<double> first, last;
        for (int k = 1; k < stages; k++) {
          unsigned long long done = 0, r0 = ~0ull, r1 = 0;
          for (int b = 0; b < grid; b++) {
            done = std::max(done, t[((size_t)(k - 1) * 3 + 2) * grid + b]);
            r0 = std::min(r0, t[((size_t)k * 3 + 1) * grid + b]);
            r1 = std::max(r1, t[((size_t)k * 3 + 1) * grid + b]);
          }
          first.push_back(((double)r0 - (double)done) * 1e-3);
          last.push_back(((double)r1 - (double)done) * 1e-3);
        }
        printf("%-7s %7.1f %6d %10.3f %10.3f %12.3f %12.3f\n", mode_name[mode], mb, per_sm, us, us - bytes_us,
               median(first), median(last));
        if (jf)
          fprintf(jf,
                  "%s\n  {\"handoff\": \"%s\", \"mb\": %.1f, \"blocks_per_sm\": %d, \"us_per_stage\": %.4f, "
                  "\"us_over_bytes\": %.4f, \"release_first_us\": %.4f, \"release_last_us\": %.4f}",
                  rows++ ? "," : "", mode_name[mode], mb, per_sm, us, us - bytes_us, median(first), median(last));
        CHECK(cudaGraphExecDestroy(ge));
        CHECK(cudaGraphDestroy(g));
      }
  if (jf) {
    fprintf(jf, "\n]}\n");
    fclose(jf);
  }
  if (bad) fprintf(stderr, "bench_handoff: %d wrong values\n", bad);
  return bad ? 1 : 0;
}
