// Catch2 2.13 (Debian) and 3.x (the GPU machine) behind one include.
#pragma once

#if __has_include(<catch2/catch_all.hpp>)
#include <catch2/catch_all.hpp>
#define VMM_CATCH_VERSION 3
#else
#include <catch2/catch.hpp>
#define VMM_CATCH_VERSION 2
#endif
