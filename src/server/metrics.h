#pragma once
// Counters and histograms behind GET /metrics, rendered in the Prometheus text exposition format.
#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "fastvlm/fastvlm.hpp"
#include "fastvlm/scheduler.hpp"

namespace fastvlm::server {

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double value);
  void render(std::string& out, const std::string& name, const std::string& help) const;

 private:
  std::vector<double> upper_bounds_;
  std::vector<uint64_t> bucket_counts_;  // per bucket, not cumulative; the last one is +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

class Metrics {
 public:
  Metrics();
  void count_response(int status);
  void count_generation(const Generation& generation);
  void count_cancelled();
  // With the scheduler's state when /metrics is scraped.
  std::string render(const SchedulerStats& scheduler) const;

 private:
  mutable std::mutex mutex_;
  std::map<int, uint64_t> responses_by_status_;
  Histogram ttft_seconds_, vision_seconds_;
  uint64_t prompt_tokens_ = 0, generated_tokens_ = 0, cancelled_ = 0;
  uint64_t image_cache_hits_ = 0, image_cache_misses_ = 0;
};

}  // namespace fastvlm::server
