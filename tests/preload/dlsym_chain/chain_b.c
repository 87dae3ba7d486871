/* The definition after chain_a's (see chain_a.c). */
const char* vmm_chain_name(void) { return "b"; }

/* Referenced by the test program so that the linker keeps this library. */
int vmm_chain_b_linked(void) { return 1; }
