// Linked into every integration and server-stress test binary: when PQXXPOOL_TEST_LOG names a
// file, spdlog's default logger (which every pool the tests build logs to) appends everything,
// trace level up, to that file, so that log_scan_test.cpp can look for secrets in all of it.
// Tests also log the messages of the errors they catch there (itest::log_caught).

#include <cstdlib>
#include <memory>

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace {

struct capture_installer {
  capture_installer() {
    const char* path = std::getenv("PQXXPOOL_TEST_LOG");
    if (path == nullptr || *path == '\0') return;
    auto file = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path, /*truncate=*/false);
    file->set_level(spdlog::level::trace);
    auto console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    console->set_level(spdlog::level::warn);
    auto logger = std::make_shared<spdlog::logger>("itest", spdlog::sinks_init_list{file, console});
    logger->set_level(spdlog::level::trace);
    logger->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [pid %P] [%l] %v");
    logger->flush_on(spdlog::level::trace);  // a crashing test must not lose what it logged
    spdlog::set_default_logger(std::move(logger));
  }
};

const capture_installer installer;

}  // namespace
