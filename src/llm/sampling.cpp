#include "llm/sampling.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <unordered_map>

#include "core/error.h"

namespace fastvlm {
namespace {

// Argmax with ties resolved to the lowest id (the first maximum met).
int32_t argmax(std::span<const float> scores) {
  size_t best = 0;
  for (size_t i = 1; i < scores.size(); ++i) {
    if (scores[i] > scores[best]) best = i;
  }
  return int32_t(best);
}

}  // namespace

Sampler::Sampler(const SamplingParams& params) : params_(params), generator_(params.seed) {
  if (!(params.repeat_penalty > 0)) {
    throw Error("sampling: repeat penalty must be positive, got " + std::to_string(params.repeat_penalty));
  }
  if (params.repeat_last_n < -1) {
    throw Error("sampling: repeat_last_n must be -1 (all), 0 (none) or positive, got " +
                std::to_string(params.repeat_last_n));
  }
}

void Sampler::apply_repetition_penalty(std::span<const int32_t> recent_tokens) {
  size_t window = params_.repeat_last_n < 0 ? recent_tokens.size()
                                            : std::min(recent_tokens.size(), size_t(params_.repeat_last_n));
  std::vector<int32_t> penalised_ids(recent_tokens.end() - window, recent_tokens.end());
  // Each id is penalised once however often it occurs, as in llama.cpp.
  std::sort(penalised_ids.begin(), penalised_ids.end());
  penalised_ids.erase(std::unique(penalised_ids.begin(), penalised_ids.end()), penalised_ids.end());
  for (int32_t id : penalised_ids) {
    if (id < 0 || size_t(id) >= penalised_.size()) {
      throw Error("sampling: recent token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                  std::to_string(penalised_.size()) + ")");
    }
    float& logit = penalised_[id];
    logit = logit > 0 ? logit / params_.repeat_penalty : logit * params_.repeat_penalty;
  }
}

// Fills candidates_ with the top_k highest scores (all of them when top_k is disabled), sorted by
// decreasing logit, equal logits in id order so the outcome never depends on the sort algorithm.
void Sampler::select_top_k(std::span<const float> scores) {
  auto higher = [](const Candidate& a, const Candidate& b) {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
  };
  candidates_.clear();
  const size_t k = size_t(params_.top_k);
  if (params_.top_k > 0 && k < scores.size()) {
    // One pass with a heap of the k best so far, its worst at the front: linear in the vocabulary, and
    // most scores are rejected by a single comparison, so the full vocabulary is never copied or sorted.
    for (size_t i = 0; i < scores.size(); ++i) {
      const Candidate candidate{int32_t(i), scores[i]};
      if (candidates_.size() < k) {
        candidates_.push_back(candidate);
        std::push_heap(candidates_.begin(), candidates_.end(), higher);
      } else if (higher(candidate, candidates_.front())) {
        std::pop_heap(candidates_.begin(), candidates_.end(), higher);
        candidates_.back() = candidate;
        std::push_heap(candidates_.begin(), candidates_.end(), higher);
      }
    }
  } else {
    for (size_t i = 0; i < scores.size(); ++i) candidates_.push_back({int32_t(i), scores[i]});
  }
  std::sort(candidates_.begin(), candidates_.end(), higher);
}

int32_t Sampler::sample(std::span<const float> logits, std::span<const int32_t> recent_tokens) {
  if (logits.empty()) throw Error("sampling: empty logits");

  std::span<const float> scores = logits;
  if (params_.repeat_penalty != 1.0f && params_.repeat_last_n != 0 && !recent_tokens.empty()) {
    penalised_.assign(logits.begin(), logits.end());
    apply_repetition_penalty(recent_tokens);
    scores = penalised_;
  }
  if (params_.temperature <= 0) return argmax(scores);

  select_top_k(scores);

  // Softmax with temperature over the (sorted) survivors; the first has the largest logit.
  probabilities_.resize(candidates_.size());
  const float max_logit = candidates_.front().logit;
  double total = 0;
  for (size_t i = 0; i < candidates_.size(); ++i) {
    probabilities_[i] = std::exp((candidates_[i].logit - max_logit) / params_.temperature);
    total += probabilities_[i];
  }

  // Top-p: the shortest prefix whose probability mass reaches top_p.
  size_t kept = candidates_.size();
  if (params_.top_p < 1.0f) {
    double mass = 0;
    for (size_t i = 0; i < kept; ++i) {
      mass += probabilities_[i];
      if (mass >= double(params_.top_p) * total) {
        kept = i + 1;
        break;
      }
    }
  }
  // Min-p: drop tokens less likely than min_p times the most likely one (a prefix, as the list is sorted).
  if (params_.min_p > 0.0f) {
    const float threshold = params_.min_p * probabilities_.front();
    size_t above = 1;
    while (above < kept && probabilities_[above] >= threshold) ++above;
    kept = above;
  }

  double kept_mass = 0;
  for (size_t i = 0; i < kept; ++i) kept_mass += probabilities_[i];
  // A uniform double in [0, 1) from the top 53 bits: std::uniform_real_distribution is not specified
  // bit for bit, and the same seed must give the same tokens with every standard library.
  const double uniform = double(generator_() >> 11) * 0x1.0p-53;
  const double target = uniform * kept_mass;
  double cumulative = 0;
  for (size_t i = 0; i < kept; ++i) {
    cumulative += probabilities_[i];
    if (target < cumulative) return candidates_[i].id;
  }
  return candidates_[kept - 1].id;  // rounding left target at the very top
}

void Sampler::apply_penalties(std::span<float> logits, std::span<const int32_t> generated) const {
  for (const auto& [id, bias] : params_.logit_bias) {
    if (id < 0 || size_t(id) >= logits.size())
      throw Error("logit_bias: token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                  std::to_string(logits.size()) + ")");
    logits[size_t(id)] += bias;
  }
  if (params_.presence_penalty == 0 && params_.frequency_penalty == 0) return;
  std::unordered_map<int32_t, int> counts;
  for (int32_t id : generated) ++counts[id];
  for (const auto& [id, count] : counts)
    if (id >= 0 && size_t(id) < logits.size())
      logits[size_t(id)] -= params_.presence_penalty + params_.frequency_penalty * float(count);
}

TokenLogprob token_logprob(std::span<const float> logits, int32_t token, int top_n) {
  float max_logit = -INFINITY;
  for (float logit : logits) max_logit = std::max(max_logit, logit);
  double total = 0;
  for (float logit : logits) total += std::exp(double(logit - max_logit));
  const float log_total = max_logit + float(std::log(total));
  TokenLogprob result;
  result.id = token;
  result.logprob = logits[size_t(token)] - log_total;
  std::vector<int32_t> ids(logits.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t(i);
  const size_t n = std::min(size_t(std::max(top_n, 0)), ids.size());
  std::partial_sort(ids.begin(), ids.begin() + n, ids.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  for (size_t i = 0; i < n; ++i) result.top.emplace_back(ids[i], logits[size_t(ids[i])] - log_total);
  return result;
}

}  // namespace fastvlm
