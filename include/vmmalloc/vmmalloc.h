/*
 * vmmalloc C ABI.
 *
 * Every function returns a vmm_status (VMM_SUCCESS == 0) and never lets an
 * exception escape. On failure, vmm_last_error() returns the message of the
 * calling thread's last failure (valid until that thread's next failing call).
 *
 * A workspace, export or import handle that is not live (destroyed already,
 * never returned by its create call, or of another kind) is
 * VMM_ERROR_INVALID_VALUE in every call that takes it, destroy included.
 *
 * This header needs no CUDA header: a stream is a `struct CUstream_st*`, the
 * type behind both the driver's CUstream and the runtime's cudaStream_t. The
 * null stream (0) is the legacy default stream.
 */
#ifndef VMMALLOC_VMMALLOC_H
#define VMMALLOC_VMMALLOC_H

#include <stddef.h>
#include <stdint.h>

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

/* -------------------------------------------------------------- allocator */

/* The general allocator (C++: vmm::Allocator). One per device, process-wide,
 * thread-safe. A block belongs to the stream it was allocated on: freed, it
 * is reusable on that stream at once and on another stream only after the
 * work queued on its stream (and on every stream given to
 * vmm_record_stream) before the free has completed. No call waits for the
 * GPU or synchronizes the device. */

/* A block of at least `bytes` bytes (address aligned to 512 bytes) on
 * `device` (-1: the current CUDA device, or 0), usable on `stream`. *ptr is
 * NULL for bytes == 0 (VMM_SUCCESS) and on failure: VMM_ERROR_OUT_OF_MEMORY
 * (vmm_last_error() then says what was tried, the device's capacity and free
 * memory, what vmmalloc holds in use / cached / pending reclaim, and the
 * largest request that would fit), VMM_ERROR_INVALID_VALUE, VMM_ERROR_DRIVER.
 * A failure changes nothing. */
VMM_API vmm_status vmm_malloc(void** ptr, size_t bytes, int device, vmm_stream_t stream);

/* Frees a block of any device (found by its address). stream == NULL: in
 * the block's own stream order (the usual case). Otherwise in `stream`'s
 * order: work queued on `stream` (and on the block's own stream) before this
 * call may still use the block. To order a free after the legacy default
 * stream (also NULL), call vmm_record_stream(ptr, NULL) first. ptr == NULL
 * is a no-op. VMM_ERROR_UNKNOWN_POINTER for a pointer that is not a live
 * block (double free, foreign pointer), VMM_ERROR_INVALID_VALUE for a
 * `stream` that is no stream (never created, or destroyed): nothing
 * changes. */
VMM_API vmm_status vmm_free(void* ptr, vmm_stream_t stream);

/* Marks a live block as used on `stream` too: after its free, it is reused
 * elsewhere only once the work queued on `stream` up to the free is done.
 * VMM_ERROR_INVALID_VALUE for a `stream` that is no stream: nothing changes. */
VMM_API vmm_status vmm_record_stream(void* ptr, vmm_stream_t stream);

/* Call before destroying a stream used with vmm_malloc/vmm_free/
 * vmm_record_stream: fences are recorded lazily, and recording on a
 * destroyed CUDA stream is undefined behaviour. Records the stream's last
 * fence now (on every device's allocator) and none after, until a new
 * allocation on the same handle. Free the stream's blocks first. */
VMM_API vmm_status vmm_release_stream(vmm_stream_t stream);

/* Unmaps every free chunk of `device`'s allocator (once its fence
 * completes, in the background) and releases the cached chunks to the
 * device. Waits for nothing. *released (may be NULL) receives the bytes
 * handed back or queued to be. */
VMM_API vmm_status vmm_empty_cache(int device, size_t* released);

/* The device's memory cap at run time as a fraction of its total memory
 * (PyTorch's set_per_process_memory_fraction; the memory_cap key of
 * VMMALLOC_CONF): 0 <= fraction <= 1 (1: no cap, 0: no new
 * device memory), else VMM_ERROR_INVALID_VALUE. Cached
 * memory above a lower cap is released at once; allocations past the cap
 * fail with VMM_ERROR_OUT_OF_MEMORY. vmm_get_memory_fraction gives 1.0
 * when there is no cap. */
VMM_API vmm_status vmm_set_memory_fraction(int device, double fraction);
VMM_API vmm_status vmm_get_memory_fraction(int device, double* fraction);

/* Usable size of a live block (its rounded size). */
VMM_API vmm_status vmm_block_size(const void* ptr, size_t* bytes);

/* Counters of one device's allocator; names follow PyTorch's memory_stats.
 * Field for field vmm::AllocatorStats (the VMM_ALLOCATOR_STATS list in
 * vmmalloc/stats.hpp); the library's build checks that they agree. */
typedef struct vmm_allocator_stats {
  size_t allocated_bytes;      /* live blocks, rounded sizes */
  size_t peak_allocated_bytes;
  size_t requested_bytes;      /* live blocks, sizes as requested */
  size_t peak_requested_bytes;
  size_t reserved_bytes;       /* physical memory held: mapped + cached + pending */
  size_t peak_reserved_bytes;
  size_t mapped_bytes;         /* physical memory mapped in the heap */
  size_t cached_bytes;         /* free chunks kept by the pool (unmapped) */
  size_t pending_bytes;        /* unmaps waiting for their fences */
  size_t inactive_split_bytes; /* free bytes inside mapped segments */
  size_t active_blocks;
  uint64_t allocations;
  uint64_t frees;
  uint64_t stitches;           /* allocations served by stitching free chunks */
  uint64_t chunk_creates;      /* physical handles created */
  uint64_t chunk_releases;
  uint64_t ooms;               /* allocations that failed out of memory */
  uint64_t fenced_free_waits;  /* waits for other streams' work instead of mapping
                                  (fenced_free_limit) */
  uint64_t total_allocated_bytes; /* running totals: bytes allocated so far, rounded */
  uint64_t total_freed_bytes;     /* bytes freed so far, rounded */
  uint64_t total_requested_bytes; /* bytes allocated so far, as requested */
  uint64_t total_freed_requested_bytes;
  size_t peak_active_blocks;
  uint64_t alloc_retries;         /* allocations tried again after out of memory */
  /* small blocks only (rounded size < 1 MiB): the same figures */
  size_t small_allocated_bytes;
  size_t peak_small_allocated_bytes;
  uint64_t small_total_allocated_bytes;
  uint64_t small_total_freed_bytes;
  size_t small_requested_bytes;
  size_t peak_small_requested_bytes;
  uint64_t small_total_requested_bytes;
  uint64_t small_total_freed_requested_bytes;
  size_t small_active_blocks;
  size_t peak_small_active_blocks;
  uint64_t small_allocations;
  uint64_t small_frees;
  /* large blocks only (rounded size >= 1 MiB): the same figures */
  size_t large_allocated_bytes;
  size_t peak_large_allocated_bytes;
  uint64_t large_total_allocated_bytes;
  uint64_t large_total_freed_bytes;
  size_t large_requested_bytes;
  size_t peak_large_requested_bytes;
  uint64_t large_total_requested_bytes;
  uint64_t large_total_freed_requested_bytes;
  size_t large_active_blocks;
  size_t peak_large_active_blocks;
  uint64_t large_allocations;
  uint64_t large_frees;
} vmm_allocator_stats;

VMM_API vmm_status vmm_get_allocator_stats(int device, vmm_allocator_stats* stats);

/* --------------------------------------------------------- sleep and wake */

/* Tagged memory handed back to the device and restored at the same
 * addresses (docs/sleep.md; C++: vmmalloc/tags.hpp, vmm::Allocator::sleep).
 * Tag names are 1 to 64 characters of [A-Za-z0-9_.:-]; any other name is
 * VMM_ERROR_INVALID_VALUE. A name used for the first time becomes a tag. */

/* Opens a tag scope on the calling thread: its allocations are tagged `name`
 * until the matching vmm_tag_pop. Scopes nest (at most 64 deep); the
 * innermost wins. */
VMM_API vmm_status vmm_tag_push(const char* name);

/* Closes the calling thread's innermost tag scope. VMM_ERROR_INVALID_VALUE
 * if none is open. */
VMM_API vmm_status vmm_tag_pop(void);

typedef enum vmm_sleep_mode {
  VMM_SLEEP_OFFLOAD = 0, /* live bytes copied to pinned host memory, back at wake */
  VMM_SLEEP_DISCARD = 1, /* live bytes dropped: contents undefined after wake */
  /* Not a mode: widens the type to every non-negative int, so that a wrong
   * mode is a reported error (VMM_ERROR_INVALID_VALUE) in C++ too. */
  VMM_SLEEP_MODE_FORCE_INT = 0x7fffffff
} vmm_sleep_mode;

/* What one vmm_sleep or vmm_wake did, summed over its tags and devices
 * (vmm::SleepReport). */
typedef struct vmm_sleep_report {
  size_t live_bytes;   /* bytes of live blocks under the tags */
  size_t copied_bytes; /* bytes copied (to host by sleep, back by wake) */
  size_t device_bytes; /* physical memory released (sleep) or mapped (wake) */
  size_t pinned_bytes; /* pinned host memory allocated by this call */
  size_t tags_changed; /* tags that went to sleep / woke up */
  double copy_seconds; /* time spent in copies */
} vmm_sleep_report;

/* Puts the `ntags` tags to sleep on `device` (-1: on every device's
 * allocator created so far): waits for the work queued on the streams that
 * used their memory (nothing else), copies their live blocks to pinned host
 * memory (VMM_SLEEP_OFFLOAD) or not (VMM_SLEEP_DISCARD), then unmaps and
 * releases all their physical memory. Addresses stay reserved. Tags asleep
 * already are skipped; ntags == 0 does nothing (tags may then be NULL).
 * `report` may be NULL (left unchanged on failure). VMM_ERROR_INVALID_VALUE
 * for a NULL or bad name or an unknown mode (found before any tag is
 * touched), or a tag whose memory a stream is capturing into;
 * VMM_ERROR_DRIVER (the message names the call) if a fence, pinned
 * allocation, copy or unmap fails. Tags are handled in order: the failing
 * one is left as it was (awake, intact), those before it stay asleep. */
VMM_API vmm_status vmm_sleep(int device, const char* const* tags, size_t ntags, vmm_sleep_mode mode,
                             vmm_sleep_report* report);

/* Wakes the tags on `device` (-1: every device's allocator created so far):
 * maps physical memory at the same addresses and copies offloaded bytes
 * back; blocks, pointers and captured CUDA graphs are valid again. Awake
 * tags are skipped. keep_host != 0 keeps the pinned host buffer for the
 * next sleep. VMM_ERROR_OUT_OF_MEMORY if the device has too little free
 * memory: the tag stays asleep with its host copy intact, and a later
 * vmm_wake can succeed. */
VMM_API vmm_status vmm_wake(int device, const char* const* tags, size_t ntags, int keep_host,
                            vmm_sleep_report* report);

/* *asleep = 1 if `tag` is asleep on `device` (-1: the current CUDA device,
 * or 0), else 0. */
VMM_API vmm_status vmm_is_sleeping(int device, const char* tag, int* asleep);

/* ------------------------------------------------------------- inspection */

/* Snapshots (docs/snapshot.md): the allocator's whole state as one JSON
 * document - per device its counters, regions (workspaces and heap
 * segments) with chunks and blocks, the physical pool, pending reclaims and
 * the recent events. Taking one waits for no GPU work. `vmmctl` reads them
 * (docs/tools.md). */

/* The snapshot of this process now. *json receives a NUL-terminated string
 * (free it with vmm_snapshot_free), *length (may be NULL) its length. */
VMM_API vmm_status vmm_snapshot_json(char** json, size_t* length);

/* Frees a string from vmm_snapshot_json. NULL is a no-op. */
VMM_API void vmm_snapshot_free(char* json);

/* Writes the snapshot to `path` ("%p" becomes the process id, "%%" a "%"),
 * through a temporary file renamed into place. VMM_ERROR_INVALID_VALUE if
 * it cannot be written (the message names the path and the system error). */
VMM_API vmm_status vmm_snapshot_write(const char* path);

/* Turns per-allocation events (allocate, free) in the event ring on
 * (enabled != 0) or off, process-wide, at once. Off by default
 * (VMMALLOC_CONF allocation_events:on); while off they cost one relaxed
 * atomic load per allocation and free. */
VMM_API vmm_status vmm_set_allocation_events(int enabled);

/* Names a workspace in snapshots and vmmctl ("" clears the name). */
VMM_API vmm_status vmm_workspace_set_name(vmm_workspace* ws, const char* name);

/* Work on `stream` uses the workspace: a sleep of its tag (a workspace
 * created inside vmm_tag_push/vmm_tag_pop carries that tag) waits for the
 * work queued there, besides the null stream's. Call vmm_release_stream
 * before destroying the stream. */
VMM_API vmm_status vmm_workspace_record_stream(vmm_workspace* ws, vmm_stream_t stream);

/* ------------------------------------------------------------ several GPUs */

/* Peer access (docs/multi_gpu.md): memory of one GPU read and written
 * directly by another. A granted peer reaches everything vmmalloc maps on the
 * device, mapped now and later. VMMALLOC_CONF's peer_access grants peers when
 * a device is first used. */

/* *can_access = 1 if `peer` can read and write memory of `device` (-1: the
 * current device), else 0 (cuDeviceCanAccessPeer; 1 for the device itself).
 * VMM_ERROR_INVALID_VALUE for a device or peer that does not exist. */
VMM_API vmm_status vmm_can_access_peer(int device, int peer, int* can_access);

/* Makes the memory vmmalloc maps on `device` (-1: current) readable and
 * writable by `peer`, what is mapped now and what is mapped later. Granting
 * twice does nothing. VMM_ERROR_NOT_SUPPORTED if `peer` cannot reach `device`
 * (nothing changed), VMM_ERROR_INVALID_VALUE, VMM_ERROR_DRIVER. */
VMM_API vmm_status vmm_enable_peer_access(int device, int peer);

/* ------------------------------------------------------------------ IPC */

/* Sharing a workspace with another process (docs/ipc.md). The exporter
 * serves importers over connected AF_UNIX SOCK_STREAM sockets (one per
 * importer, e.g. from socketpair() or accept()); chunks travel as file
 * descriptors (SCM_RIGHTS) and are mapped read/write by the importer. Either
 * side may close first: memory is freed once neither maps it. */

typedef struct vmm_workspace_export vmm_workspace_export;
typedef struct vmm_workspace_import vmm_workspace_import;

/* Shares `ws`: its chunks are never reused once they leave it (they are
 * released to the device instead). *out receives the export. `ws` may be
 * destroyed before the export; importers then get an error. */
VMM_API vmm_status vmm_workspace_export_create(vmm_workspace* ws, vmm_workspace_export** out);

/* Serves the importer at the other end of `socket`, which the export takes
 * over (closed when the importer hangs up, misses the ipc_timeout_ms
 * deadline, the export is destroyed, or this call fails). Answered on a
 * background thread per connection. VMM_ERROR_INVALID_VALUE for a
 * descriptor that is not a connected AF_UNIX SOCK_STREAM socket, and for a
 * peer process of a uid that ipc_peer_uids does not allow (by default any
 * other than this process's effective uid). */
VMM_API vmm_status vmm_workspace_export_serve(vmm_workspace_export* ex, int socket);

/* Stops serving and closes every connection without waiting for any
 * importer; importers keep what they mapped. ex may be NULL. */
VMM_API vmm_status vmm_workspace_export_destroy(vmm_workspace_export* ex);

/* Imports the workspace exported at the other end of `socket` (taken over:
 * closed with the import, also on failure) on `device` (-1: the current CUDA
 * device, or 0): maps every chunk the exporter has mapped now, read/write,
 * at an address of this process. Waits at most ipc_timeout_ms (60 s by
 * default) for the exporter's whole answer, here and in updates. */
VMM_API vmm_status vmm_workspace_import_create(int socket, int device,
                                               vmm_workspace_import** out);

/* Follows the exporter: maps the chunks it added; unmaps those it dropped
 * once the work queued on `stream` so far completes (waiting for that fence,
 * only when something is dropped). On failure the size is unchanged and a
 * later call retries. */
VMM_API vmm_status vmm_workspace_import_update(vmm_workspace_import* im, vmm_stream_t stream);

VMM_API vmm_status vmm_workspace_import_data(const vmm_workspace_import* im, void** data);
/* The exporter's size at the last update. */
VMM_API vmm_status vmm_workspace_import_size(const vmm_workspace_import* im, size_t* size);
VMM_API vmm_status vmm_workspace_import_capacity(const vmm_workspace_import* im,
                                                 size_t* capacity);

/* Unmaps everything once the work queued on `stream` so far completes (never
 * waits) and closes the connection. im may be NULL. If it fails
 * (VMM_ERROR_DRIVER: the fence could not be recorded) the import is intact
 * and still the caller's. */
VMM_API vmm_status vmm_workspace_import_destroy(vmm_workspace_import* im, vmm_stream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* VMMALLOC_VMMALLOC_H */
