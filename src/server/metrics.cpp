#include "server/metrics.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace fastvlm::server {
namespace {

// Seconds; from a tiny model on one core (milliseconds) to a 7B model's large prefill (a minute).
const std::vector<double> kLatencyBuckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};

std::string format_number(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.9g", value);
  return text;
}

void render_counter(std::string& out, const std::string& name, const std::string& help, uint64_t value) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " counter\n" + name + " " + std::to_string(value) + "\n";
}

void render_gauge(std::string& out, const std::string& name, const std::string& help, double value) {
  std::ostringstream text;
  text << value;
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " gauge\n" + name + " " + text.str() + "\n";
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds)
    : upper_bounds_(std::move(upper_bounds)), bucket_counts_(upper_bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  size_t bucket = size_t(std::lower_bound(upper_bounds_.begin(), upper_bounds_.end(), value) - upper_bounds_.begin());
  ++bucket_counts_[bucket];
  sum_ += value;
  ++count_;
}

void Histogram::render(std::string& out, const std::string& name, const std::string& help) const {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " histogram\n";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bucket_counts_.size(); ++i) {
    cumulative += bucket_counts_[i];
    const std::string bound = i < upper_bounds_.size() ? format_number(upper_bounds_[i]) : "+Inf";
    out += name + "_bucket{le=\"" + bound + "\"} " + std::to_string(cumulative) + "\n";
  }
  out += name + "_sum " + format_number(sum_) + "\n" + name + "_count " + std::to_string(count_) + "\n";
}

Metrics::Metrics() : ttft_seconds_(kLatencyBuckets), vision_seconds_(kLatencyBuckets) {}

void Metrics::count_response(int status) {
  std::lock_guard lock(mutex_);
  ++responses_by_status_[status];
}

void Metrics::count_generation(const Generation& generation) {
  std::lock_guard lock(mutex_);
  prompt_tokens_ += uint64_t(generation.prompt_tokens);
  generated_tokens_ += generation.token_ids.size();
  const Timings& timings = generation.timings;
  if (timings.ttft_ms > 0) ttft_seconds_.observe(timings.ttft_ms / 1000);
  if (timings.image_cache_hit) {
    ++image_cache_hits_;
  } else if (timings.vision_ms > 0) {
    ++image_cache_misses_;
    vision_seconds_.observe((timings.preprocess_ms + timings.vision_ms + timings.projector_ms) / 1000);
  }
}

void Metrics::count_cancelled() {
  std::lock_guard lock(mutex_);
  ++cancelled_;
}

std::string Metrics::render(const SchedulerStats& scheduler) const {
  std::lock_guard lock(mutex_);
  std::string out;
  out += "# HELP fastvlm_http_responses_total HTTP responses sent, by status code\n"
         "# TYPE fastvlm_http_responses_total counter\n";
  for (const auto& [status, count] : responses_by_status_)
    out += "fastvlm_http_responses_total{code=\"" + std::to_string(status) + "\"} " + std::to_string(count) + "\n";
  ttft_seconds_.render(out, "fastvlm_time_to_first_token_seconds",
                       "From the start of a request's turn to its first sampled token");
  vision_seconds_.render(out, "fastvlm_vision_encode_seconds",
                         "Image preprocessing, vision tower and projector, for images not found in the cache");
  render_counter(out, "fastvlm_prompt_tokens_total", "Positions prefilled (image tokens included)", prompt_tokens_);
  render_counter(out, "fastvlm_generated_tokens_total", "Tokens generated", generated_tokens_);
  render_counter(out, "fastvlm_cancelled_requests_total", "Generations cancelled by a client disconnect", cancelled_);
  render_counter(out, "fastvlm_image_cache_hits_total", "Images whose embeddings came from the cache", image_cache_hits_);
  render_counter(out, "fastvlm_image_cache_misses_total", "Images run through the vision encoder", image_cache_misses_);
  render_gauge(out, "fastvlm_slots", "Slots (sequences decoded together)", scheduler.slots);
  render_gauge(out, "fastvlm_slots_busy", "Slots prefilling or decoding now", scheduler.active);
  render_gauge(out, "fastvlm_queue_depth", "Requests waiting for a slot", scheduler.queued);
  render_gauge(out, "fastvlm_batch_size", "Sequences in the last decode step", scheduler.last_batch);
  render_gauge(out, "fastvlm_decode_tokens_per_second",
               "Tokens of the decode steps of the last 10 s over those steps' time, all sequences together",
               scheduler.tokens_per_second);
  render_gauge(out, "fastvlm_longest_token_gap_seconds",
               "Longest time between two decode steps while sequences were decoding", scheduler.longest_gap_ms / 1000);
  return out;
}

}  // namespace fastvlm::server
