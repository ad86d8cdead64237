/*
 * base/cpu_relax.h (internal): the pause instruction of a spin-wait loop, which lets a sibling hyperthread run and
 * saves power while a peer is about to publish.
 */
#ifndef KILN_BASE_CPU_RELAX_H
#define KILN_BASE_CPU_RELAX_H

static inline void kiln_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield" ::: "memory");
#endif
}

#endif
