// The size helpers of allocator/base/units.hpp: parse_size (the grammar of
// every size option), format_size (its inverse) and format_bytes (the
// human-readable form of messages and tables).
#include <cstddef>
#include <limits>
#include <string>
#include <string_view>

#include "allocator/base/units.hpp"
#include "tests/common/catch.hpp"

using vmm::GiB;
using vmm::KiB;
using vmm::MiB;
using vmm::TiB;

TEST_CASE("units: parse_size", "[units]") {
  using vmm::parse_size;
  CHECK(parse_size("0") == 0u);
  CHECK(parse_size("4096") == 4096u);
  CHECK(parse_size("4096B") == 4096u);
  CHECK(parse_size("4096b") == 4096u);
  for (const char* s : {"3K", "3k", "3KB", "3kb", "3KiB", "3kib", "3Kib", "3KIB"}) {
    INFO(s);
    CHECK(parse_size(s) == 3 * KiB);
  }
  for (const char* s : {"3M", "3m", "3MB", "3MiB", "3mib"}) CHECK(parse_size(s) == 3 * MiB);
  for (const char* s : {"3G", "3g", "3GB", "3GiB", "3gib"}) CHECK(parse_size(s) == 3 * GiB);
  for (const char* s : {"3T", "3t", "3TB", "3TiB", "3tib"}) CHECK(parse_size(s) == 3 * TiB);
  CHECK(parse_size("007M") == 7 * MiB);

  bool overflowed = true;
  CHECK(parse_size("18446744073709551615", &overflowed) == std::numeric_limits<std::size_t>::max());
  CHECK(!overflowed);
  CHECK(parse_size("17179869183G") == std::size_t{17179869183} << 30);
  for (const char* s : {"18446744073709551616", "17179869184G", "16777216T", "99999999999T",
                        "99999999999999999999999999999"}) {
    INFO(s);
    overflowed = false;
    CHECK(!parse_size(s, &overflowed));
    CHECK(overflowed);
  }
  for (const char* s : {"", "M", " 2M", "2M ", "2 M", "2Mi", "2MiBB", "2BB", "2iB", "+2M", "-2",
                        "0x10", "1.5G", "2P", "2E", "1e3", "２M"}) {
    INFO("\"" << s << "\"");
    overflowed = true;
    CHECK(!parse_size(s, &overflowed));
    CHECK(!overflowed);
  }
  CHECK(!parse_size(std::string_view("2M\0", 3)));
}

TEST_CASE("units: format_size is parse_size's inverse", "[units]") {
  using vmm::format_size;
  CHECK(format_size(0) == "0");
  CHECK(format_size(3) == "3");
  CHECK(format_size(1024) == "1K");
  CHECK(format_size(2 * MiB) == "2M");
  CHECK(format_size(1536 * MiB) == "1536M");
  CHECK(format_size(GiB) == "1G");
  CHECK(format_size(16 * TiB) == "16T");
  CHECK(format_size(3 * MiB + 5) == "3145733");
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{1023}, KiB + 1, 3 * GiB,
                        5 * TiB, std::numeric_limits<std::size_t>::max(),
                        std::numeric_limits<std::size_t>::max() - TiB + 1}) {
    CHECK(vmm::parse_size(format_size(n)) == n);
  }
}

TEST_CASE("units: format_bytes", "[units]") {
  using vmm::format_bytes;
  CHECK(format_bytes(0) == "0 B");
  CHECK(format_bytes(300) == "300 B");
  CHECK(format_bytes(1023) == "1023 B");
  CHECK(format_bytes(1024) == "1 KiB");
  CHECK(format_bytes(1536) == "1.50 KiB");
  CHECK(format_bytes(2 * MiB) == "2 MiB");
  CHECK(format_bytes(512 * MiB) == "512 MiB");
  CHECK(format_bytes(GiB + GiB / 2) == "1.50 GiB");
  CHECK(format_bytes(GiB + 1) == "1.00 GiB");
  CHECK(format_bytes(GiB - 1) == "1.00 GiB");  // not "1024.00 MiB"
  CHECK(format_bytes(GiB - 100 * MiB) == "924 MiB");
  CHECK(format_bytes(5 * TiB) == "5 TiB");
  CHECK(format_bytes(TiB << 10) == "1 PiB");
  CHECK(format_bytes(std::numeric_limits<std::size_t>::max()) == "16.00 EiB");
}

TEST_CASE("units: sizes in PyTorch's format (its OOM message)", "[units]") {
  using vmm::format_size_like_pytorch;
  CHECK(format_size_like_pytorch(0) == "0 bytes");
  CHECK(format_size_like_pytorch(1024) == "1024 bytes");
  CHECK(format_size_like_pytorch(1536) == "1.50 KiB");
  CHECK(format_size_like_pytorch(std::size_t{1} << 20) == "1024.00 KiB");
  CHECK(format_size_like_pytorch(std::size_t{2} << 20) == "2.00 MiB");
  CHECK(format_size_like_pytorch(std::size_t{1} << 30) == "1024.00 MiB");
  CHECK(format_size_like_pytorch(std::size_t{80} << 30) == "80.00 GiB");
  CHECK(format_size_like_pytorch(std::size_t{1} << 40) == "1024.00 GiB");
}
