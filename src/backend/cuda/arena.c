/*
 * backend/cuda/arena.c: the device arena (see arena.h).
 */
#include "backend/cuda/arena.h"

#include <stdatomic.h>

#include "backend/cuda/cuda_common.h"

/* Relaxed: a statistic read by tests after the work it counts has been joined. */
static _Atomic int64_t n_mallocs;

void *kiln_cuda_arena_take(kiln_cuda_arena *a, int64_t bytes) {
  int64_t at = a->used;
  int64_t need = kiln_cuda__round_up(bytes > 0 ? bytes : 1, KILN_CUDA_ALIGN);
  if (a->base && at + need > a->size) return NULL;
  a->used = at + need;
  /* While sizing, offsets from a non-NULL fake base so that "taken" is never confused with NULL. */
  return a->base ? (void *)(a->base + at) : (void *)(uintptr_t)(KILN_CUDA_ALIGN + at);
}

int kiln_cuda_arena_reserve(kiln_cuda_arena *a, int64_t bytes) {
  void *p = NULL;
  a->base = NULL;
  a->size = 0;
  a->used = 0;
  atomic_fetch_add_explicit(&n_mallocs, 1, memory_order_relaxed);
  KILN_CUDA_CHECK(cudaMalloc(&p, (size_t)bytes));
  a->base = p;
  a->size = bytes;
  return 0;
}

void kiln_cuda_arena_release(kiln_cuda_arena *a) {
  if (a->base) (void)cudaFree(a->base);
  a->base = NULL;
  a->size = a->used = 0;
}

int64_t kiln_cuda_arena_mallocs(void) { return atomic_load_explicit(&n_mallocs, memory_order_relaxed); }
