#pragma once
/// @file pqxxpool.hpp
/// Umbrella header: everything a user of pqxxpool needs (the low-level aws/sigv4.hpp aside).
#include "pqxxpool/aws/credentials.hpp"
#include "pqxxpool/aws/dsql.hpp"
#include "pqxxpool/config.hpp"
#include "pqxxpool/dsql_pool.hpp"
#include "pqxxpool/errors.hpp"
#include "pqxxpool/health.hpp"
#include "pqxxpool/metrics.hpp"
#ifdef PQXXPOOL_WITH_HTTP  // defined by the pqxxpool target when built with the metrics server
#include "pqxxpool/metrics_server.hpp"
#endif
#include "pqxxpool/pool.hpp"
#include "pqxxpool/retry.hpp"
#include "pqxxpool/stats.hpp"
#include "pqxxpool/version.hpp"
