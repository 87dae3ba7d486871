/* Defines vmm_chain_name, as chain_b does; vmm_chain_next_name looks up the
 * NEXT definition after this library, which must be chain_b's. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

const char* vmm_chain_name(void) { return "a"; }

const char* vmm_chain_next_name(void) {
  const char* (*next)(void) = (const char* (*)(void))dlsym(RTLD_NEXT, "vmm_chain_name");
  return next != NULL ? next() : "none";
}
