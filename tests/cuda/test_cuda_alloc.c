/*
 * tests/cuda/test_cuda_alloc.c: after warm-up, the decode loop allocates nothing: no host allocation (malloc and
 * friends are interposed here and counted; libraries linked into this program, the CUDA runtime included, reach
 * them through the same symbols), no arena cudaMalloc, and no device memory taken by anyone (cudaMemGetInfo).
 * Both decode paths are counted: logits to the host (forward of one token) and sampling on the device. Host
 * allocations are counted per thread: the decode loop's own thread (where every kiln and CUDA API call of the loop
 * runs) must make none; allocations by the driver's helper threads, which run on their own schedule, are
 * reported but are not the loop's.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>

#include "backend/cuda/arena.h"
#include "backend/cuda/cuda_impl.h"
#include "cuda/gpu_test.h"
#include "kiln/kiln.h"

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

/* Relaxed: read on this thread after the counted work. */
static atomic_long n_alloc, n_alloc_other;
static pthread_t main_thread;

static void count_(void) {
  atomic_fetch_add_explicit(pthread_equal(pthread_self(), main_thread) ? &n_alloc : &n_alloc_other, 1,
                            memory_order_relaxed);
}

void *malloc(size_t n) {
  count_();
  return __libc_malloc(n);
}
void *calloc(size_t a, size_t b) {
  count_();
  return __libc_calloc(a, b);
}
void *realloc(void *p, size_t n) {
  count_();
  return __libc_realloc(p, n);
}
void *memalign(size_t al, size_t n) {
  count_();
  return __libc_memalign(al, n);
}
void *aligned_alloc(size_t al, size_t n) {
  count_();
  return __libc_memalign(al, n);
}
int posix_memalign(void **p, size_t al, size_t n) {
  count_();
  *p = __libc_memalign(al, n);
  return *p ? 0 : ENOMEM;
}
void free(void *p) { __libc_free(p); }

static long allocs(void) { return atomic_load_explicit(&n_alloc, memory_order_relaxed); }
static long allocs_other(void) { return atomic_load_explicit(&n_alloc_other, memory_order_relaxed); }

int main(void) {
  main_thread = pthread_self();
  gt_skip_without_gpu();
  char dir[1024];
  const char *src = getenv("KILN_SOURCE_DIR");
  snprintf(dir, sizeof dir, "%s/tests/data/tiny/qwen3-f32", src ? src : ".");
  kiln_model *m = NULL;
  GT_OK(kiln_model_load(&m, dir, NULL, NULL));
  if (!m) return gt_finish("test_cuda_alloc");
  const int V = m->cfg.vocab_size;
  kiln_engine_opts o = {.device = "cuda", .n_ctx = 256, .n_seqs = 2};
  kiln_backend *b = NULL;
  long a0 = allocs();
  GT_OK(kiln_backend_cuda.create(&b, m, &o, 0));
  GT_CHECK(allocs() > a0, "the allocation counter saw nothing during create(): interposition is not working");
  if (!b) return gt_finish("test_cuda_alloc");
  float *logits = __libc_malloc(sizeof(float) * (size_t)V);
  int32_t prompt[16];
  for (int i = 0; i < 16; i++) prompt[i] = (i * 37 + 5) % V;
  kiln_sampling s = kiln_sampling_default();
  s.temperature = 0.9f, s.top_p = 0.9f, s.top_k = 50, s.min_p = 0.01f, s.seed = 3;
  /* warm-up: a prefill and a few steps of each kind */
  GT_OK(kiln_backend_cuda.forward(b, 0, 0, prompt, 16, logits, false));
  int pos = 16;
  int32_t tok = 1;
  for (int i = 0; i < 3; i++, pos++) GT_OK(kiln_backend_cuda.decode_sample(b, 0, pos, tok, &s, (uint64_t)i, &tok));
  for (int i = 0; i < 3; i++, pos++) GT_OK(kiln_backend_cuda.forward(b, 0, pos, &tok, 1, logits, false));

  size_t free0 = 0, free1 = 0, total = 0;
  GT_CUDA(cudaMemGetInfo(&free0, &total));
  long h0 = allocs(), o0 = allocs_other();
  int64_t d0 = kiln_cuda_arena_mallocs();
  for (int i = 0; i < 100; i++, pos++) {
    if (i % 2) GT_OK(kiln_backend_cuda.forward(b, 1, i, &tok, 1, logits, false));
    else GT_OK(kiln_backend_cuda.decode_sample(b, 1, i, tok, &s, (uint64_t)i, &tok));
  }
  long h1 = allocs(), o1 = allocs_other();
  int64_t d1 = kiln_cuda_arena_mallocs();
  GT_CUDA(cudaMemGetInfo(&free1, &total));
  GT_CHECK(h1 == h0, "decode loop: %ld host allocations in 100 steps", h1 - h0);
  GT_CHECK(d1 == d0, "decode loop: %lld arena cudaMalloc calls", (long long)(d1 - d0));
  GT_CHECK(free1 == free0, "decode loop: device free memory went from %zu to %zu bytes", free0, free1);
  printf("decode loop, 100 steps: %ld host allocations (%ld on the driver's own threads), %lld cudaMalloc, device "
         "free memory change %lld bytes\n",
         h1 - h0, o1 - o0, (long long)(d1 - d0), (long long)free1 - (long long)free0);
  kiln_backend_cuda.destroy(b);
  __libc_free(logits);
  kiln_model_free(m);
  return gt_finish("test_cuda_alloc");
}
