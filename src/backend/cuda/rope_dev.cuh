/*
 * backend/cuda/rope_dev.cuh (internal, device code): per-head RMSNorm and RoPE of one head held in shared memory
 * by one warp, shared by the q/k/v kernel (rope.cu) and the persistent decode kernel (decode_step.cu).
 */
#ifndef KILN_CUDA_ROPE_DEV_CUH
#define KILN_CUDA_ROPE_DEV_CUH

#include "backend/cuda/cuda_common.h"

/* Normalises (when nw != NULL) and rotates buf[0..hd) in place; the calling warp owns buf. */
static __device__ __forceinline__ void kiln_norm_rotate(float *buf, int hd, const float *nw, float eps,
                                                        const float *inv_freq, int pos) {
  int lane = threadIdx.x & 31;
  if (nw) {
    float ss = 0.f;
    for (int i = lane; i < hd; i += 32) ss = fmaf(buf[i], buf[i], ss);
    ss = kiln_warp_sum(ss);
    float inv = rsqrtf(ss / (float)hd + eps);
    for (int i = lane; i < hd; i += 32) buf[i] = nw[i] * (buf[i] * inv);
    __syncwarp();
  }
  int h = hd / 2;
  float fp = (float)pos;
  /* Each lane reads and writes only its own pairs (i, i + h): no lane touches another lane's pair. */
  for (int i = lane; i < h; i += 32) {
    float s, c;
    sincosf(inv_freq[i] * fp, &s, &c);
    float x1 = buf[i], x2 = buf[i + h];
    buf[i] = x1 * c - x2 * s;
    buf[i + h] = x2 * c + x1 * s;
  }
  __syncwarp();
}

#endif /* KILN_CUDA_ROPE_DEV_CUH */
