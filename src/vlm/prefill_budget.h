#pragma once
// How many prompt positions the Scheduler prefills in a decode step while other sequences decode (the chunk
// rides along in their step, one pass over the weights for both): as many as fit in the time that the
// token-gap target leaves beside the decode step, at the cost per position measured so far. A fixed count
// suits one load and misses another: 64 positions beside one stream on an idle machine are a short pause,
// beside 8 streams on a busy one they double it. Costs are kept in thread-milliseconds (ms x threads), so
// that a step run on part of the cores (while an image is encoded on the rest) is sized for its threads.

namespace fastvlm {

class PrefillBudget {
 public:
  // Positions of a chunk even when the decode step alone takes the whole target: a prompt must advance.
  static constexpr int kMinChunk = 8;

  // max_gap_ms: the longest pause wanted between two tokens of a decoding sequence, 0 for none (every
  // chunk is max_chunk positions); max_chunk: the most positions of one chunk.
  PrefillBudget(double max_gap_ms, int max_chunk);

  // Positions to carry in the next decode step, of a prompt with `remaining` positions left, on `threads`
  // threads. 0 until a decode step without a chunk was measured (what a chunk adds is told from it).
  int next_chunk(int remaining, int threads) const;
  // Measurements: a prefill alone of `positions`; a decode step (its sampling included) that carried
  // `chunk` positions (0: none). Each on `threads` threads.
  void prefilled(int positions, int threads, double ms);
  void stepped(int chunk, int threads, double ms);

 private:
  double max_gap_ms_;
  int max_chunk_;
  double position_thread_ms_ = 0;  // 0 until a prefill was measured
  double decode_thread_ms_ = 0;    // a step without a chunk; 0 until one was measured
};

}  // namespace fastvlm
