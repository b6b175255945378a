// default_credentials_chain and caching_provider.

#include <algorithm>
#include <exception>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "aws/credential_sources.hpp"
#include "pqxxpool/aws/credentials.hpp"
#include "pqxxpool/errors.hpp"

namespace pqxxpool::aws {
namespace {

using std::chrono::system_clock;

class default_chain final : public credentials_provider {
 public:
  default_chain(std::string profile, std::string region) : m_profile(std::move(profile)), m_region(std::move(region)) {}

  credentials get() override {
    std::vector<std::string> tried;
    if (!m_profile.empty()) {
      tried.push_back("environment: not used, profile '" + m_profile + "' is given in code");
    } else if (environment_credentials::present()) {
      return environment_credentials{}.get();  // claimed: incomplete keys are an error, not a skip
    } else {
      tried.push_back("environment: AWS_ACCESS_KEY_ID is not set");
    }
    if (std::optional<credentials> c = detail::profile_sources(m_profile, m_region, &tried)) return std::move(*c);
    if (std::optional<credentials> c = detail::container_credentials(tried)) return std::move(*c);
    if (std::optional<credentials> c = detail::instance_metadata_credentials(tried)) return std::move(*c);
    std::string message = "no credentials found; tried ";
    for (std::size_t i = 0; i < tried.size(); ++i) message += (i == 0 ? "" : "; ") + tried[i];
    throw token_error(name(), message);
  }

  std::string name() const override {
    return m_profile.empty() ? "credentials chain" : "credentials chain (profile '" + m_profile + "')";
  }

 private:
  const std::string m_profile;
  const std::string m_region;
};

}  // namespace

std::shared_ptr<credentials_provider> default_credentials_chain(chain_options options) {
  if (options.provider) return std::move(options.provider);
  if (options.explicit_credentials)
    return std::make_shared<static_credentials>(std::move(*options.explicit_credentials));
  return std::make_shared<default_chain>(std::move(options.profile), std::move(options.region));
}

// --- caching_provider ----------------------------------------------------------------------------

caching_provider::caching_provider(std::shared_ptr<credentials_provider> inner, std::chrono::seconds refresh_window,
                                   clock_function clock)
    : m_inner(std::move(inner)),
      m_window(refresh_window),
      m_clock(clock ? std::move(clock) : clock_function([] { return system_clock::now(); })) {
  if (!m_inner) throw std::invalid_argument("pqxxpool: caching_provider needs a provider");
  if (refresh_window.count() < 0)
    throw std::invalid_argument("pqxxpool: caching_provider's refresh_window is negative");
}

std::string caching_provider::name() const { return m_inner->name(); }

credentials caching_provider::get() {
  std::unique_lock<std::mutex> lk(m_mu);
  auto unexpired = [this](system_clock::time_point now) {
    return m_cached && (!m_cached->expiration || now < *m_cached->expiration);
  };
  for (;;) {
    const auto now = m_clock();
    const bool valid = unexpired(now);
    if (valid && now < m_next_refresh) return *m_cached;
    if (!m_refreshing) break;
    if (valid) return *m_cached;  // another thread is refreshing; these still work
    m_refreshed.wait(lk);
  }

  // Refresh on this thread, without the lock: others keep being served meanwhile.
  m_refreshing = true;
  lk.unlock();
  std::optional<credentials> fresh;
  std::exception_ptr error;
  try {
    fresh = m_inner->get();
  } catch (...) {
    error = std::current_exception();
  }
  lk.lock();
  m_refreshing = false;
  m_refreshed.notify_all();

  const auto now = m_clock();
  if (fresh) {
    if (!fresh->expiration) {
      m_next_refresh = now + ttl_without_expiration;
    } else {
      const auto expires = *fresh->expiration;
      m_next_refresh = expires - m_window > now ? expires - m_window : std::min(now + retry_interval, expires);
    }
    m_cached = std::move(fresh);
    return *m_cached;
  }
  if (unexpired(now)) {  // keep serving what still works; try again a little later
    m_next_refresh =
        m_cached->expiration ? std::min(now + retry_interval, *m_cached->expiration) : now + retry_interval;
    return *m_cached;
  }
  m_cached.reset();
  std::rethrow_exception(error);
}

}  // namespace pqxxpool::aws
