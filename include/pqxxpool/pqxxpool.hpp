#pragma once
/// @file pqxxpool.hpp
/// Umbrella header: everything a user of pqxxpool needs (the low-level aws/sigv4.hpp aside).
#include "pqxxpool/aws/credentials.hpp"
#include "pqxxpool/aws/dsql.hpp"
#include "pqxxpool/config.hpp"
#include "pqxxpool/dsql_pool.hpp"
#include "pqxxpool/errors.hpp"
#include "pqxxpool/metrics.hpp"
#include "pqxxpool/pool.hpp"
#include "pqxxpool/retry.hpp"
#include "pqxxpool/stats.hpp"
#include "pqxxpool/version.hpp"
