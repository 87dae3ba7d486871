// The real dlsym, behind the interposer's own (dlsym_hook.cpp).
#pragma once

namespace vmm::preload {

// glibc's dlsym, found with dlvsym(RTLD_NEXT, "dlsym", ...) (GLIBC_2.34, else
// the architecture's first glibc version): calling plain dlsym from here
// would call the interposer's own. Looked up on first use; never null once a
// lookup succeeded. Called from the interposer, so RTLD_NEXT and
// RTLD_DEFAULT are resolved relative to libvmmalloc_preload.so.
void* real_dlsym(void* handle, const char* name) noexcept;

}  // namespace vmm::preload
