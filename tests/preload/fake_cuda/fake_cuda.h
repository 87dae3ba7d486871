/* Test hooks of the fake CUDA driver and runtime (tests/preload/fake_cuda):
 * what they were asked to do, for the interposer's host tests. */
#ifndef VMM_TESTS_FAKE_CUDA_H
#define VMM_TESTS_FAKE_CUDA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct CUstream_st;

typedef struct fake_cuda_counters {
  unsigned long allocations;       /* driver allocations (fake device memory) */
  unsigned long frees;
  unsigned long refused_frees;     /* frees of pointers the fake never handed out */
  unsigned long streams_created;
  unsigned long streams_destroyed;
  unsigned long resets;            /* cuDevicePrimaryCtxReset(_v2) */
  unsigned long synchronizations;  /* cuCtxSynchronize */
  unsigned long stream_waits;      /* cuStreamWaitEvent */
  unsigned long proc_lookups;      /* cuGetProcAddress calls */
} fake_cuda_counters;

/* Driver (libcuda.so.1 of the tests). */
fake_cuda_counters fake_cuda_read_counters(void);
void fake_cuda_set_capturing(struct CUstream_st* stream, int capturing);
int fake_cuda_owns(const void* ptr);
void fake_cuda_set_no_context(int none);

/* Runtime (libvmm_fake_cudart.so): its internal allocation path, the way a
 * statically linked runtime reaches the driver: through the entry points it
 * took with cuGetProcAddress, never through the runtime symbols. */
int fake_cudart_internal_malloc(void** ptr, size_t bytes);
int fake_cudart_internal_free(void* ptr);

#ifdef __cplusplus
}
#endif

#endif
