#include "core/clock.hpp"

#include <sched.h>
#include <time.h>

namespace pqxxpool::core {

int clock::cpu_of_caller() noexcept { return ::sched_getcpu(); }

namespace {

class system_clock final : public clock {
 public:
  system_clock() {
    timespec res{};
    // The coarse clock ticks once per jiffy (typically 1–4 ms); deadline checks add this lag.
    if (::clock_getres(CLOCK_MONOTONIC_COARSE, &res) == 0)
      m_lag = std::chrono::seconds(res.tv_sec) + std::chrono::nanoseconds(res.tv_nsec);
    else
      m_lag = std::chrono::milliseconds(10);
  }
  time_point now() noexcept override { return std::chrono::steady_clock::now(); }
  time_point coarse_now() noexcept override {
    // libstdc++'s steady_clock is CLOCK_MONOTONIC; the coarse variant shares its epoch.
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return time_point(std::chrono::duration_cast<duration>(std::chrono::seconds(ts.tv_sec) +
                                                           std::chrono::nanoseconds(ts.tv_nsec)));
  }
  duration coarse_lag() const noexcept override { return m_lag; }
  void wait_until(std::condition_variable& cv, std::unique_lock<std::mutex>& lk,
                  time_point deadline) override {
    if (deadline == time_point::max())
      cv.wait(lk);
    else
      cv.wait_until(lk, deadline);
  }

 private:
  duration m_lag{};
};

}  // namespace

std::shared_ptr<clock> make_system_clock() { return std::make_shared<system_clock>(); }

}  // namespace pqxxpool::core
