/*
 * backend/cuda/compare.cu: bitwise comparison of two device buffers (compare.h).
 */
#include "backend/cuda/compare.h"
#include "backend/cuda/cuda_common.h"

/* 16-byte words where both buffers allow them, single bytes for the rest; one flag write per differing thread. */
static __global__ void differ_kernel(const unsigned char *a, const unsigned char *b, int64_t bytes, int64_t words,
                                     unsigned *flag) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  bool d = false;
  const uint4 *a4 = (const uint4 *)a, *b4 = (const uint4 *)b;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < words; i += stride) {
    const uint4 x = a4[i], y = b4[i];
    d |= x.x != y.x || x.y != y.y || x.z != y.z || x.w != y.w;
  }
  for (int64_t i = words * 16 + (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < bytes; i += stride)
    d |= a[i] != b[i];
  if (d) *flag = 1;
}

extern "C" int kiln_cuda_bits_differ(const void *a, const void *b, int64_t bytes, unsigned *flag,
                                     cudaStream_t stream) {
  if (bytes < 0 || !a || !b || !flag) return kiln_error(KILN_EINVAL, "cuda bits_differ: bad arguments");
  if (bytes == 0) return 0;
  const bool aligned = ((uintptr_t)a % 16) == 0 && ((uintptr_t)b % 16) == 0;
  const int64_t words = aligned ? bytes / 16 : 0;
  int64_t blocks = ((aligned ? words : bytes) + 255) / 256;
  if (blocks > 1024) blocks = 1024;
  if (blocks < 1) blocks = 1;
  differ_kernel<<<(unsigned)blocks, 256, 0, stream>>>((const unsigned char *)a, (const unsigned char *)b, bytes,
                                                      words, flag);
  KILN_CUDA_LAUNCHED();
  return 0;
}
