/* Loaded with RTLD_LOCAL: its dependency local_d is in its own scope only,
 * not the global one. dlsym(RTLD_NEXT) from here searches that scope after
 * this library, so it finds local_d's symbol; resolved as if called from
 * anywhere else, it would not. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

int vmm_local_c_finds_d(void) { return dlsym(RTLD_NEXT, "vmm_local_d_symbol") != NULL; }

/* A direct reference, so that the linker records local_d as a dependency. */
int vmm_local_d_symbol(void);
int vmm_local_c_calls_d(void) { return vmm_local_d_symbol(); }
