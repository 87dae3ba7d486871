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

/* A tagged block offloaded and restored (docs/sleep.md): the symbols of
 * sleep and wake are exported and usable from C. */
static int sleep_and_wake(void) {
  const char* tags[] = {"consumer"};
  vmm_sleep_report report;
  void* p = NULL;
  int asleep = -1;
  if (!check(vmm_tag_push(tags[0]), "vmm_tag_push")) return 0;
  if (!check(vmm_malloc(&p, 4 * MIB, 0, NULL), "vmm_malloc (tagged)")) return 0;
  if (!check(vmm_tag_pop(), "vmm_tag_pop")) return 0;
  memset(p, 0x3c, 4 * MIB);
  if (!check(vmm_sleep(0, tags, 1, VMM_SLEEP_OFFLOAD, &report), "vmm_sleep")) return 0;
  if (!check(vmm_is_sleeping(0, tags[0], &asleep), "vmm_is_sleeping")) return 0;
  if (asleep != 1 || report.copied_bytes != 4 * MIB) {
    fprintf(stderr, "[c] FAILED: sleep: asleep %d, %zu bytes copied\n", asleep,
            report.copied_bytes);
    return 0;
  }
  if (!check(vmm_wake(0, tags, 1, 0, &report), "vmm_wake")) return 0;
  if (((const uint8_t*)p)[4 * MIB - 1] != 0x3c) {
    fprintf(stderr, "[c] FAILED: bytes lost by sleep and wake\n");
    return 0;
  }
  return check(vmm_free(p, NULL), "vmm_free");
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
  if (!sleep_and_wake()) return 1;
  printf("[c] C ABI from C ok\n");
  return 0;
}
