#pragma once
/// @file version.hpp
/// pqxxpool's version.
#define PQXXPOOL_VERSION_MAJOR 0
#define PQXXPOOL_VERSION_MINOR 1
#define PQXXPOOL_VERSION_PATCH 0
namespace pqxxpool {
/// The library's version as "major.minor.patch".
inline constexpr const char* version = "0.1.0";
}  // namespace pqxxpool
