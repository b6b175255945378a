#pragma once
/// @file pqxxpool.hpp
/// Umbrella header: everything a user of pqxxpool needs.
#include "pqxxpool/config.hpp"
#include "pqxxpool/errors.hpp"
#include "pqxxpool/pool.hpp"
#include "pqxxpool/stats.hpp"
#include "pqxxpool/version.hpp"
