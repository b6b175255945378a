#pragma once
/// @file duration.hpp
/// Durations on the command line, shared by every subcommand: `500ms`, `10s`, `2m`, `1h`, or a plain
/// number meaning seconds. A decimal fraction is allowed (`1.5s`, `0.25`); the result is rounded to
/// the nearest millisecond.

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include <CLI/CLI.hpp>

namespace pqxxpool_cli {

/// The accepted forms, for help texts and error messages.
inline constexpr const char* duration_forms =
    "a number with an optional unit ms, s, m, h or d (e.g. 500ms, 10s, 2m, 1h, 7d; a plain number means "
    "seconds)";

/// Parses text as a duration; std::nullopt when it is not one of the accepted forms, is negative,
/// or is too large to represent. Never throws.
[[nodiscard]] std::optional<std::chrono::milliseconds> parse_duration(std::string_view text) noexcept;

/// Formats d compactly in the largest unit that represents it exactly (`1h`, `90s`, `250ms`).
[[nodiscard]] std::string format_duration(std::chrono::milliseconds d);

/// Adds a duration option to app that stores into target (which keeps its value when the option
/// is absent; the help shows it as the default). Bad input is a CLI::ValidationError naming the
/// option and the accepted forms. When allow_zero is false, 0 is rejected too (and a target of 0
/// is not shown as a default).
CLI::Option* add_duration_option(CLI::App& app, const std::string& name, std::chrono::milliseconds& target,
                                 const std::string& description, bool allow_zero = true);

}  // namespace pqxxpool_cli
