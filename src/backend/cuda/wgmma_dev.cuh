/*
 * backend/cuda/wgmma_dev.cuh (internal, device code): the Hopper warpgroup MMA (wgmma.mma_async, sm_90a) as the
 * prefill attention kernel uses it (A, 16 bf16 of k for each of a warp's 16 rows, in registers; B in shared memory
 * through a matrix descriptor) and as the prefill GEMM uses it (both operands in shared memory); f32 accumulators.
 *
 * Register layouts (PTX ISA, "register fragments" of wgmma.m64nNk16): warp w of the warpgroup owns rows 16w ..
 * 16w+15 of the 64, and within its rows both A and the accumulator D have mma.sync.m16n8k16's layouts: A's four
 * .b32 are a0..a3 of the m16k16 fragment; D is N/8 blocks of the m16n8 accumulator, block i in d[4i .. 4i+3]
 * (rows g and g+8, columns 8i + 2t, 8i + 2t + 1 for lane 4g + t). So code written for mma.sync keeps its
 * fragments.
 *
 * Shared memory: 128-byte swizzle. A tile of R rows x 64 bf16 (128 bytes a row) is R x 128 bytes, row r's 16-byte
 * chunk c at chunk c ^ (r & 7); wider rows are stored as such tiles one after the other (columns 0-63, then 64-127),
 * and every tile starts on a multiple of 1,024 bytes (the swizzle pattern's period, so the descriptor's base offset
 * is 0). B is read either K-major (its N rows are the tile's rows: keys for Q K^T; 8-row groups 1,024 bytes apart,
 * the k16 step at +32 bytes within a row) or MN-major (the tile's rows are k: values for P V; 8-row groups of k
 * 1,024 bytes apart, the 64-column tiles of N `lbo` bytes apart, the k16 step at +16 rows).
 *
 * Ordering: wgmma reads shared memory through the async proxy, so data written there by ordinary stores or
 * cp.async is fenced (kiln_wg_fence_smem) by its writers before the barrier that publishes it; registers written
 * by ordinary instructions (accumulators, A) are fenced by kiln_wg_fence before the wgmmas that read them; results
 * are read only after kiln_wg_commit + kiln_wg_wait0.
 *
 * Everything here compiles to nothing but a trap outside sm_90a (KILN_WG_OK is 0): the host launches the kernels
 * that use it only where kiln_cuda_wgmma_built() and the device is compute capability 9.x.
 */
#ifndef KILN_CUDA_WGMMA_DEV_CUH
#define KILN_CUDA_WGMMA_DEV_CUH

#include <stdint.h>

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define KILN_WG_OK 1
#else
#define KILN_WG_OK 0
#endif

/* The descriptor of a 128-byte-swizzled operand at shared address `addr` (16-byte aligned, inside a tile that
 * starts on 1,024 bytes): start address, leading and stride byte offsets, each >> 4; swizzle mode 1 (128 B). */
static __device__ __forceinline__ uint64_t kiln_wg_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return (uint64_t)((addr & 0x3FFFFu) >> 4) | (uint64_t)((lbo >> 4) & 0x3FFFu) << 16 |
         (uint64_t)((sbo >> 4) & 0x3FFFu) << 32 | (uint64_t)1 << 62;
}

/* Byte offset of 16-byte chunk c (columns 8c .. 8c + 7) of row r of a bf16 tile whose rows are `rs` bytes apart
 * and whose 64-column parts are `hb` bytes apart, with the chunks of each part XOR-swizzled by (r & 7). */
static __host__ __device__ __forceinline__ uint32_t kiln_swz_off(int r, int c, int rs, int hb) {
  return (uint32_t)((c >> 3) * hb + r * rs + (((c & 7) ^ (r & 7)) << 4));
}
/* ... in a tile of `rows` rows stored with wgmma's 128-byte swizzle: columns 0-63 of every row as `rows` x 128
 * bytes, then columns 64-127 the same way. */
static __host__ __device__ __forceinline__ uint32_t kiln_wg_sw128_off(int r, int c, int rows) {
  return kiln_swz_off(r, c, 128, rows * 128);
}
/* The descriptor of step kd (columns 16 kd .. 16 kd + 15) of a K-major operand: the tile's rows are M (A) or N
 * (B), its columns k; 8-row groups 1,024 bytes apart, the step at +32 bytes a row within its 64-column part. */
static __device__ __forceinline__ uint64_t kiln_wg_desc_k(uint32_t tile, int rows, int kd) {
  return kiln_wg_desc(tile + (uint32_t)((kd >> 2) * rows * 128 + (kd & 3) * 32), 16, 1024);
}
/* The descriptor of step kk (rows 16 kk .. 16 kk + 15) of an MN-major B: the tile's rows are k, its columns N;
 * 8-row groups of k 1,024 bytes apart, the 64-column parts of N rows x 128 bytes apart. */
static __device__ __forceinline__ uint64_t kiln_wg_desc_mn(uint32_t tile, int rows, int kk) {
  return kiln_wg_desc(tile + (uint32_t)(kk * 16 * 128), (uint32_t)(rows * 128), 1024);
}

static __device__ __forceinline__ void kiln_wg_fence(void) {
#if KILN_WG_OK
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#else
  __trap();
#endif
}
static __device__ __forceinline__ void kiln_wg_commit(void) {
#if KILN_WG_OK
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
static __device__ __forceinline__ void kiln_wg_wait0(void) {
#if KILN_WG_OK
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
#endif
}
/* Waits until at most one of this thread's committed groups is still running (the one committed last). */
static __device__ __forceinline__ void kiln_wg_wait1(void) {
#if KILN_WG_OK
  asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
#endif
}
/* Makes this thread's earlier writes to shared memory (stores, completed cp.async) visible to wgmma. */
static __device__ __forceinline__ void kiln_wg_fence_smem(void) {
#if KILN_WG_OK
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

/* The accumulator operands of an m64nNk16: N/2 f32, d[0][0] .. d[N/8 - 1][3], in groups of 32 (KILN_WG_D32(q):
 * d[8q] .. d[8q + 7]), and their places in the instruction's text (KILN_WG_R32_q: %32q .. %32q + 31) */
#define KILN_WG_D8(i) "+f"(d[i][0]), "+f"(d[i][1]), "+f"(d[i][2]), "+f"(d[i][3])
#define KILN_WG_D32(q) \
  KILN_WG_D8(8 * (q)), KILN_WG_D8(8 * (q) + 1), KILN_WG_D8(8 * (q) + 2), KILN_WG_D8(8 * (q) + 3), \
      KILN_WG_D8(8 * (q) + 4), KILN_WG_D8(8 * (q) + 5), KILN_WG_D8(8 * (q) + 6), KILN_WG_D8(8 * (q) + 7)
#define KILN_WG_R32_0 \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
#define KILN_WG_R32_1 \
  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
#define KILN_WG_R32_2 \
  "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, " \
  "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95"
#define KILN_WG_R32_3 \
  "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, " \
  "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"

/* One wgmma.mma_async of shape m64n<NS>k16 with accumulators REGS (their operands: the ...), A in registers (RS:
 * 4 .b32 at operands IA0 .. IA3) or in shared memory (SS: a descriptor at operand IA), B's descriptor at IB, B's
 * transpose flag at IT (RS) and the accumulate flag at IP; operand numbers as strings, pasted into the text. */
#define KILN_WG_MMA_RS(NS, REGS, IA0, IA1, IA2, IA3, IB, IT, IP, ...)                                             \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" IP ", 0;\n"                                                  \
               "wgmma.mma_async.sync.aligned.m64n" NS "k16.f32.bf16.bf16 {" REGS "}, "                            \
               "{%" IA0 ", %" IA1 ", %" IA2 ", %" IA3 "}, %" IB ", p, 1, 1, %" IT ";\n}\n"                         \
               : __VA_ARGS__                                                                                     \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "n"(TRANS_B), "r"(accumulate))
#define KILN_WG_MMA_SS(NS, REGS, IA, IB, IP, ...)                                                                 \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" IP ", 0;\n"                                                  \
               "wgmma.mma_async.sync.aligned.m64n" NS "k16.f32.bf16.bf16 {" REGS "}, %" IA ", %" IB                 \
               ", p, 1, 1, 0, 0;\n}\n"                                                                            \
               : __VA_ARGS__                                                                                     \
               : "l"(a), "l"(b), "r"(accumulate))

/* d (64 x N f32, this thread's fragment) = (accumulate ? d : 0) + A (64 x 16 bf16, registers) B (16 x N, `b`);
 * TRANS_B: B is MN-major. N is 64 or 128. */
template <int N, int TRANS_B>
static __device__ __forceinline__ void kiln_wg_mma_rs(float (&d)[N / 8][4], const uint32_t a[4], uint64_t b,
                                                      int accumulate) {
  static_assert(N == 64 || N == 128, "kiln_wg_mma_rs: N is 64 or 128");
#if KILN_WG_OK
  if constexpr (N == 64)
    KILN_WG_MMA_RS("64", KILN_WG_R32_0, "32", "33", "34", "35", "36", "37", "38", KILN_WG_D32(0));
  else
    KILN_WG_MMA_RS("128", KILN_WG_R32_0 ", " KILN_WG_R32_1, "64", "65", "66", "67", "68", "69", "70", KILN_WG_D32(0),
                   KILN_WG_D32(1));
#else
  (void)d, (void)a, (void)b, (void)accumulate;
  __trap();
#endif
}

/* d (64 x N f32, this thread's fragment) = (accumulate ? d : 0) + A (64 x 16 bf16, descriptor `a`, K-major) B (16 x N
 * bf16, descriptor `b`, K-major): both operands from shared memory (the GEMM's form). N is 64, 128, 192 or 256. */
template <int N>
static __device__ __forceinline__ void kiln_wg_mma_ss(float (&d)[N / 8][4], uint64_t a, uint64_t b, int accumulate) {
  static_assert(N == 64 || N == 128 || N == 192 || N == 256, "kiln_wg_mma_ss: N is 64, 128, 192 or 256");
#if KILN_WG_OK
  if constexpr (N == 64)
    KILN_WG_MMA_SS("64", KILN_WG_R32_0, "32", "33", "34", KILN_WG_D32(0));
  else if constexpr (N == 128)
    KILN_WG_MMA_SS("128", KILN_WG_R32_0 ", " KILN_WG_R32_1, "64", "65", "66", KILN_WG_D32(0), KILN_WG_D32(1));
  else if constexpr (N == 192)
    KILN_WG_MMA_SS("192", KILN_WG_R32_0 ", " KILN_WG_R32_1 ", " KILN_WG_R32_2, "96", "97", "98", KILN_WG_D32(0),
                   KILN_WG_D32(1), KILN_WG_D32(2));
  else
    KILN_WG_MMA_SS("256", KILN_WG_R32_0 ", " KILN_WG_R32_1 ", " KILN_WG_R32_2 ", " KILN_WG_R32_3, "128", "129", "130",
                   KILN_WG_D32(0), KILN_WG_D32(1), KILN_WG_D32(2), KILN_WG_D32(3));
#else
  (void)d, (void)a, (void)b, (void)accumulate;
  __trap();
#endif
}

#undef KILN_WG_MMA_SS
#undef KILN_WG_MMA_RS
#undef KILN_WG_R32_3
#undef KILN_WG_R32_2
#undef KILN_WG_R32_1
#undef KILN_WG_R32_0
#undef KILN_WG_D32
#undef KILN_WG_D8

#endif
