/* The C ABI header from plain C: compiles without any CUDA header, links
 * against the installed shared library, runs on the host backend. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <vmmalloc/vmmalloc.h>

#define MIB ((size_t)1 << 20)

static int check(vmm_status status, const char* what) {
  if (status != VMM_SUCCESS) {
    fprintf(stderr, "[c] FAILED: %s: %s: %s\n", what, vmm_status_name(status), vmm_last_error());
    return 0;
  }
  return 1;
}

int main(void) {
  vmm_workspace* ws = NULL;
  void* base = NULL;
  void* after = NULL;
  vmm_stream_t stream = NULL;
  if (!check(vmm_configure("backend:host"), "vmm_configure")) return 1;
  if (!check(vmm_workspace_create(64 * MIB, 0, &ws), "vmm_workspace_create")) return 1;
  if (!check(vmm_workspace_grow(ws, 8 * MIB), "vmm_workspace_grow(8 MiB)")) return 1;
  if (!check(vmm_workspace_data(ws, &base), "vmm_workspace_data")) return 1;
  memset(base, 0x5a, 8 * MIB);
  if (!check(vmm_workspace_grow(ws, 32 * MIB), "vmm_workspace_grow(32 MiB)")) return 1;
  if (!check(vmm_workspace_data(ws, &after), "vmm_workspace_data")) return 1;
  if (after != base || ((const uint8_t*)base)[8 * MIB - 1] != 0x5a) {
    fprintf(stderr, "[c] FAILED: base moved or contents lost by grow\n");
    return 1;
  }
  if (!check(vmm_workspace_destroy(ws, stream), "vmm_workspace_destroy")) return 1;
  printf("[c] C ABI from C ok\n");
  return 0;
}
