/*
 * backend/cuda/pdl.c: the calling thread's programmatic-dependent-launch switch (cuda_common.h). Per thread
 * because all CUDA work for a device comes from its engine thread; likewise the handoff context of the decode
 * graph's kernels.
 */
#include "backend/cuda/cuda_common.h"

static _Thread_local int pdl_on;

void kiln_cuda__set_pdl(int on) { pdl_on = on; }

int kiln_cuda__pdl(void) { return pdl_on; }

static _Thread_local kiln_cuda_handoff ho_;
static _Thread_local int ho_next_, ho_slots_;

void kiln_cuda__handoff_begin(unsigned *cnt, unsigned long long *flag, const unsigned long long *gen, int slots) {
  ho_ = (kiln_cuda_handoff){.cnt = cnt, .flag = flag, .gen = gen, .wait_slot = -1, .arrive_slot = -1};
  ho_next_ = 0;
  ho_slots_ = cnt && flag && gen && slots > 0 ? slots : 0;
}

void kiln_cuda__handoff_end(void) { kiln_cuda__handoff_begin(NULL, NULL, NULL, 0); }

kiln_cuda_handoff kiln_cuda__handoff_next(int arrive) {
  kiln_cuda_handoff h = {0};
  /* past the slots, the rest of the step waits the PDL way (a kernel's wait covers every kernel before it) */
  if (ho_next_ >= ho_slots_) return h;
  h = ho_;
  h.wait_slot = ho_next_ - 1;
  h.arrive_slot = arrive ? ho_next_ : -1;
  ho_next_ = arrive ? ho_next_ + 1 : ho_slots_; /* nothing waits on a kernel that does not arrive */
  return h;
}
