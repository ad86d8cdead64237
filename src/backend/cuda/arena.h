/*
 * backend/cuda/arena.h (internal): the one device allocation of a backend.
 *
 * Sizing runs the backend's layout twice: first over an arena with no memory (kiln_cuda_arena_take only adds up
 * the sizes and hands back offsets that are never dereferenced), then, after one cudaMalloc of the total, over the
 * real block. Everything after create() comes out of that block, so a forward pass cannot allocate.
 */
#ifndef KILN_CUDA_ARENA_H
#define KILN_CUDA_ARENA_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KILN_CUDA_ALIGN 256

typedef struct kiln_cuda_arena {
  char *base;    /* NULL while sizing */
  int64_t size;  /* bytes reserved (0 while sizing) */
  int64_t used;  /* bytes handed out */
} kiln_cuda_arena;

/* Hands out `bytes` (rounded up to KILN_CUDA_ALIGN). While sizing, returns a fake, never-dereferenced pointer. On a
 * real arena, NULL when the block is exhausted (a layout bug: the two passes disagree). */
void *kiln_cuda_arena_take(kiln_cuda_arena *a, int64_t bytes);
/* One cudaMalloc of `bytes` on the current device. */
int kiln_cuda_arena_reserve(kiln_cuda_arena *a, int64_t bytes);
void kiln_cuda_arena_release(kiln_cuda_arena *a);
/* cudaMalloc calls made by arenas in this process (a test checks that decoding adds none). */
int64_t kiln_cuda_arena_mallocs(void);

#ifdef __cplusplus
}
#endif
#endif
