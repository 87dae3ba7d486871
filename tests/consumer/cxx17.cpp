// The public headers a PyTorch extension includes must compile as C++17
// (torch.utils.cpp_extension builds with -std=c++17): checked by the CTest
// "package: public headers compile as C++17".
#include "vmmalloc/allocator.hpp"
#include "vmmalloc/errors.hpp"
#include "vmmalloc/stats.hpp"
#include "vmmalloc/tags.hpp"
#include "vmmalloc/vmmalloc.h"
#include "vmmalloc/workspace.hpp"

int main() {
  vmm::TagScope scope("cxx17");
  return vmm::current_tag() == 0;
}
