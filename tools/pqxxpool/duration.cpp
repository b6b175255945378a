#include "duration.hpp"

#include <cmath>
#include <cstdint>

namespace pqxxpool_cli {

namespace {

// Upper bound on any duration: ten years keeps `now + duration` far from overflowing a
// nanosecond steady_clock time_point, and nobody means more on this command line.
constexpr std::int64_t max_ms = std::int64_t{10} * 366 * 24 * 3600 * 1000;

bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

}  // namespace

std::optional<std::chrono::milliseconds> parse_duration(std::string_view text) noexcept {
  // Number: digits with an optional fraction ("10", "1.5", ".5", "2."); no sign, exponent or spaces.
  std::size_t i = 0;
  long double value = 0;
  bool any_digit = false;
  while (i < text.size() && is_digit(text[i])) {
    value = value * 10 + (text[i] - '0');
    any_digit = true;
    ++i;
  }
  if (i < text.size() && text[i] == '.') {
    ++i;
    long double scale = 0.1L;
    while (i < text.size() && is_digit(text[i])) {
      value += (text[i] - '0') * scale;
      scale /= 10;
      any_digit = true;
      ++i;
    }
  }
  if (!any_digit) return std::nullopt;

  const std::string_view unit = text.substr(i);
  long double ms_per_unit = 0;
  if (unit.empty() || unit == "s") {
    ms_per_unit = 1000;
  } else if (unit == "ms") {
    ms_per_unit = 1;
  } else if (unit == "m") {
    ms_per_unit = 60'000;
  } else if (unit == "h") {
    ms_per_unit = 3'600'000;
  } else if (unit == "d") {
    ms_per_unit = 86'400'000;
  } else {
    return std::nullopt;
  }
  const long double ms = std::round(value * ms_per_unit);
  if (!(ms <= static_cast<long double>(max_ms))) return std::nullopt;
  return std::chrono::milliseconds{static_cast<std::int64_t>(ms)};
}

std::string format_duration(std::chrono::milliseconds d) {
  const std::int64_t ms = d.count();
  if (ms != 0 && ms % 3'600'000 == 0) return std::to_string(ms / 3'600'000) + "h";
  if (ms != 0 && ms % 60'000 == 0) return std::to_string(ms / 60'000) + "m";
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

CLI::Option* add_duration_option(CLI::App& app, const std::string& name, std::chrono::milliseconds& target,
                                 const std::string& description, bool allow_zero) {
  // The validator runs before the callback, so the callback only ever sees valid input.
  CLI::Validator valid_duration(
      [allow_zero](std::string& input) -> std::string {
        const std::optional<std::chrono::milliseconds> d = parse_duration(input);
        if (!d) return "invalid duration '" + input + "': expected " + duration_forms + ", at most 10 years";
        if (!allow_zero && d->count() == 0) return "invalid duration '" + input + "': must be greater than 0";
        return {};
      },
      /*validator_desc=*/"", /*validator_name=*/"duration");
  CLI::Option* opt = app.add_option_function<std::string>(
      name, [&target](const std::string& input) { target = *parse_duration(input); }, description);
  opt->check(valid_duration)->type_name("DURATION");
  // A value the option would reject is no default (e.g. a required --duration starting at 0).
  if (allow_zero || target.count() != 0) opt->default_str(format_duration(target));
  return opt;
}

}  // namespace pqxxpool_cli
