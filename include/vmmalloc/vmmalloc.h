/*
 * vmmalloc C ABI.
 *
 * Every function returns a vmm_status (VMM_SUCCESS == 0) and never lets an
 * exception escape. On failure, vmm_last_error() returns the message of the
 * calling thread's last failure (valid until that thread's next failing call).
 *
 * This header needs no CUDA header: a stream is a `struct CUstream_st*`, the
 * type behind both the driver's CUstream and the runtime's cudaStream_t. The
 * null stream (0) is the legacy default stream.
 */
#ifndef VMMALLOC_VMMALLOC_H
#define VMMALLOC_VMMALLOC_H

#include <stddef.h>

#include "vmmalloc/export.h"

#ifdef __cplusplus
extern "C" {
#endif

struct CUstream_st;
typedef struct CUstream_st* vmm_stream_t;

/* ---------------------------------------------------------------- status */

typedef enum vmm_status {
  VMM_SUCCESS = 0,
  VMM_ERROR_OUT_OF_MEMORY = 1,   /* device memory, memory cap or VA exhausted */
  VMM_ERROR_INVALID_VALUE = 2,   /* bad argument: size, device, null handle */
  VMM_ERROR_DRIVER = 3,          /* a driver call failed; message names it */
  VMM_ERROR_CONFIG = 4,          /* bad VMMALLOC_CONF key or value */
  VMM_ERROR_NOT_SUPPORTED = 5,   /* the backend cannot do this */
  VMM_ERROR_UNKNOWN_POINTER = 6, /* pointer not handed out by vmmalloc */
  VMM_ERROR_INTERNAL = 7         /* a bug: please report with the message */
} vmm_status;

/* Message of the calling thread's last failure, or "" if none. */
VMM_API const char* vmm_last_error(void);

/* Name of a status code ("VMM_ERROR_OUT_OF_MEMORY"). */
VMM_API const char* vmm_status_name(vmm_status status);

/* ---------------------------------------------------------- configuration */

/* Applies a configuration string in VMMALLOC_CONF's grammar
 * ("chunk_sizes:2M+32M,pool_cache_limit:1G") before first use. Fails with
 * VMM_ERROR_CONFIG on a bad key/value, or if a device is already in use. */
VMM_API vmm_status vmm_configure(const char* conf);

/* Name of the backend serving `device` ("cuda" or "host"), initialising the
 * device's allocator state if needed. */
VMM_API vmm_status vmm_backend_name(int device, const char** name);

/* -------------------------------------------------------------- workspace */

typedef struct vmm_workspace vmm_workspace;

/* Reserves `max_bytes` of address space on `device` (-1: the current CUDA
 * device, or 0) and maps nothing yet. *out receives the workspace. */
VMM_API vmm_status vmm_workspace_create(size_t max_bytes, int device, vmm_workspace** out);

/* Grows the mapped size to at least `new_size` bytes in place: the base
 * address and contents stay, nothing is copied, nothing waits for the GPU.
 * A no-op if new_size <= size. Fails (with nothing changed) on
 * VMM_ERROR_OUT_OF_MEMORY or if new_size > capacity (VMM_ERROR_INVALID_VALUE). */
VMM_API vmm_status vmm_workspace_grow(vmm_workspace* ws, size_t new_size);

/* Shrinks to `new_size`. The detached tail returns to the pool only once the
 * work queued on `stream` so far has completed; the call itself never waits. */
VMM_API vmm_status vmm_workspace_shrink(vmm_workspace* ws, size_t new_size, vmm_stream_t stream);

VMM_API vmm_status vmm_workspace_data(const vmm_workspace* ws, void** data);
VMM_API vmm_status vmm_workspace_size(const vmm_workspace* ws, size_t* size);
VMM_API vmm_status vmm_workspace_capacity(const vmm_workspace* ws, size_t* capacity);
VMM_API vmm_status vmm_workspace_mapped_bytes(const vmm_workspace* ws, size_t* mapped);

/* Destroys the workspace. Its memory is unmapped once the work queued on
 * `stream` so far has completed; the call never waits. ws may be NULL. If it
 * fails (VMM_ERROR_DRIVER: the fence could not be recorded) the workspace is
 * intact and still the caller's: destroy it again later. */
VMM_API vmm_status vmm_workspace_destroy(vmm_workspace* ws, vmm_stream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* VMMALLOC_VMMALLOC_H */
