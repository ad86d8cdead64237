/*
 * backend/cuda/pdl.c: the calling thread's programmatic-dependent-launch switch (cuda_common.h). Per thread
 * because all CUDA work for a device comes from its engine thread.
 */
#include "backend/cuda/cuda_common.h"

static _Thread_local int pdl_on;

void kiln_cuda__set_pdl(int on) { pdl_on = on; }

int kiln_cuda__pdl(void) { return pdl_on; }
