/* A dependency of local_c, loaded into local_c's local scope only. */
int vmm_local_d_symbol(void) { return 42; }
