// The safetensors reader must reject every malformed file with an error naming it, and read the
// release checkpoint layout (BF16 weights, I64 scalars) exactly.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "core/error.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "resident_pages.h"

namespace fs = std::filesystem;
using namespace fastvlm;

namespace {

const fs::path kTiny = fs::path(FASTVLM_SHARED_DIR) / "fixtures" / "tiny-fastvlm";

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() / ("fastvlm-io-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }

 private:
  static inline int counter_ = 0;
  fs::path path_;
};

// Writes a file made of an explicit header (any JSON text) and `data_bytes` of payload.
fs::path write_raw(const fs::path& path, const std::string& header, size_t data_bytes, uint64_t claimed_len = 0) {
  std::ofstream out(path, std::ios::binary);
  uint64_t len = claimed_len ? claimed_len : header.size();
  for (int i = 0; i < 8; ++i) out.put(char((len >> (8 * i)) & 0xff));
  out << header;
  out << std::string(data_bytes, '\0');
  return path;
}

std::string error_of(const fs::path& path) {
  try {
    SafetensorsFile::open(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Safetensors, ReadsTheTinyCheckpoint) {
  auto file = SafetensorsFile::open(kTiny / "model.safetensors");
  EXPECT_EQ(file->tensors().size(), 163u);
  const TensorInfo* embed = file->find("model.embed_tokens.weight");
  ASSERT_NE(embed, nullptr);
  EXPECT_EQ(embed->dtype, DType::BF16);
  EXPECT_EQ(embed->shape, (Shape{151936, 64}));
  const TensorInfo* counter = file->find("model.vision_tower.vision_tower.model.network.0.0.convffn.conv.bn.num_batches_tracked");
  ASSERT_NE(counter, nullptr);
  EXPECT_EQ(counter->dtype, DType::I64);
  EXPECT_TRUE(counter->shape.empty());
}

TEST(Safetensors, WriteThenReadRoundTrips) {
  TempDir dir;
  Tensor t({2, 3});
  for (int i = 0; i < 6; ++i) t.data()[i] = float(i) * 0.5f;
  write_safetensors(dir.path() / "t.safetensors", {f32_tensor("x", t)}, {{"format", "pt"}});
  auto file = SafetensorsFile::open(dir.path() / "t.safetensors");
  const TensorInfo* x = file->find("x");
  ASSERT_NE(x, nullptr);
  EXPECT_EQ(x->shape, (Shape{2, 3}));
  EXPECT_EQ(std::memcmp(x->data, t.data(), 24), 0);
  EXPECT_EQ(file->metadata().at("format"), "pt");
  EXPECT_FALSE(fs::exists(dir.path() / "t.safetensors.tmp"));
}

TEST(Safetensors, RejectsMalformedFiles) {
  TempDir dir;
  const auto& d = dir.path();
  struct Case {
    fs::path path;
    const char* expected;
  };
  const std::string ok_entry = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  std::vector<Case> cases = {
      {write_raw(d / "empty.safetensors", "", 0, 0), "header"},
      {write_raw(d / "past_eof.safetensors", ok_entry, 8, 1u << 20), "past the end"},
      {write_raw(d / "huge_header.safetensors", ok_entry, 8, 1ull << 40), "limit"},
      {write_raw(d / "bad_json.safetensors", "{not json", 0), "JSON"},
      {write_raw(d / "dtype.safetensors", R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", 8), "dtype"},
      {write_raw(d / "size.safetensors", R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8), "holds 8 bytes"},
      {write_raw(d / "outside.safetensors", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 8), "outside"},
      {write_raw(d / "overlap.safetensors",
                 R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
       "overlap"},
      {write_raw(d / "negative.safetensors", R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8), "dimension"},
      // Refused while parsing: code that walks or prints a value recurses once per level.
      {write_raw(d / "deep.safetensors", "{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}", 0),
       "nests deeper than 64 levels"},
  };
  // A truncated copy of the real checkpoint: the header promises more data than the file holds.
  {
    std::ifstream in(kTiny / "model.safetensors", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    std::ofstream(d / "truncated.safetensors", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
    cases.push_back({d / "truncated.safetensors", "outside the data area"});
  }
  for (const auto& c : cases) {
    std::string message = error_of(c.path);
    EXPECT_NE(message.find(c.path.string()), std::string::npos) << c.path << ": " << message;
    EXPECT_NE(message.find(c.expected), std::string::npos) << c.path << ": " << message;
  }
  EXPECT_NE(error_of(d / "missing.safetensors").find("cannot open"), std::string::npos);
}

// The format does not promise alignment: a 9-byte header puts the data area at an odd offset. The BF16
// tensor must still be read through aligned memory (UBSan flags misaligned uint16_t loads) and exactly.
TEST(Safetensors, MisalignedDataIsReadThroughAlignedMemory) {
  TempDir dir;
  const uint16_t values[3] = {0x3f80, 0xc000, 0x4040};  // 1, -2, 3 in bfloat16
  std::string data(reinterpret_cast<const char*>(values), sizeof values);
  std::string header = R"({"w":{"dtype":"BF16","shape":[3],"data_offsets":[0,6]}})";
  header.append((8 - header.size() % 8) % 8 + 1, ' ');  // 8 + header length is odd
  const fs::path path = dir.path() / "odd.safetensors";
  {
    std::ofstream out(path, std::ios::binary);
    const uint64_t len = header.size();
    for (int i = 0; i < 8; ++i) out.put(char((len >> (8 * i)) & 0xff));
    out << header << data;
  }
  auto file = SafetensorsFile::open(path);
  const TensorInfo* w = file->find("w");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(w->data) % alignof(uint16_t), 0u);
  EXPECT_EQ(std::memcmp(w->data, values, sizeof values), 0);
  file->release(*w);  // a copy has no mapped pages to drop, and must stay readable
  float out[3];
  convert_to_f32(w->dtype, w->data, out, 3);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -2.0f);
  EXPECT_EQ(out[2], 3.0f);
}

// A weight copied into the model's own layout gives back its mapped pages: load_f32 at once, a piece-wise
// conversion range by range, each page with the range that finishes it. Pages shared with a neighbour stay.
TEST(Checkpoint, ReleasesTheMappedPagesOfCopiedWeights) {
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  TempDir dir;
  // "a": 64 pages of floats and a few more, so its end shares a page with "b"; "b": one more page and a bit.
  Tensor a({int64_t(64 * page / sizeof(float) + 100)}), b({int64_t(page / sizeof(float) + 10)});
  for (int64_t i = 0; i < a.numel(); ++i) a.data()[i] = float(i);
  for (int64_t i = 0; i < b.numel(); ++i) b.data()[i] = -float(i);
  write_safetensors(dir.path() / "model.safetensors", {f32_tensor("a", a), f32_tensor("b", b)});
  std::ofstream(dir.path() / "config.json") << "{}";
  const auto checkpoint = Checkpoint::open(dir.path());
  const TensorInfo& info = checkpoint->tensor("a", a.shape());
  const uint8_t* begin = info.data;
  const uint8_t* end = info.data + info.nbytes;
  auto resident = [&](const uint8_t* from, const uint8_t* to) { return resident_pages(from, to); };
  auto whole_pages = [&](const uint8_t* from, const uint8_t* to) {
    return reinterpret_cast<uintptr_t>(to) / page - (reinterpret_cast<uintptr_t>(from) + page - 1) / page;
  };
  auto touch = [&] {
    volatile uint8_t sink = 0;
    for (const uint8_t* p = begin; p < end; p += page / 2) sink = sink + *p;
    EXPECT_EQ(resident(begin, end), whole_pages(begin, end));
  };

  touch();
  const size_t middle = 20 * page + 123;  // not on a page boundary
  checkpoint->release("a", 0, middle);
  EXPECT_EQ(resident(begin, begin + middle), 0u);
  EXPECT_EQ(resident(begin + middle, end), whole_pages(begin + middle, end));  // the rest is kept ...
  const uint8_t* straddling = begin + middle - reinterpret_cast<uintptr_t>(begin + middle) % page;
  EXPECT_EQ(resident(straddling, straddling + page), 1u);  // ... the page straddling `middle` too
  checkpoint->release("a", middle, info.nbytes);  // the straddling page goes with the range that finishes it
  EXPECT_EQ(resident(begin, end), 0u);

  touch();
  const Tensor copy = checkpoint->load_f32("a", a.shape());
  EXPECT_EQ(resident(begin, end), 0u);
  EXPECT_EQ(std::memcmp(copy.data(), a.data(), info.nbytes), 0);
  // "b" shares a page with "a"'s end: still readable, and released pages read back the same.
  EXPECT_EQ(checkpoint->load_f32("b", b.shape()).data()[7], -7.0f);
  EXPECT_EQ(std::memcmp(checkpoint->load_f32("a", a.shape()).data(), a.data(), info.nbytes), 0);
}

// A released weight whose pages a later read maps back (a neighbour's fault maps the whole large folio
// around it) is released once more at the end of a load; a weight never released (used in place) keeps its.
TEST(Checkpoint, ReleasesAgainTheWeightsReleasedBefore) {
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  TempDir dir;
  Tensor a({int64_t(16 * page / sizeof(float))}), b({int64_t(16 * page / sizeof(float))});
  for (int64_t i = 0; i < a.numel(); ++i) a.data()[i] = b.data()[i] = float(i);
  write_safetensors(dir.path() / "model.safetensors", {f32_tensor("a", a), f32_tensor("b", b)});
  std::ofstream(dir.path() / "config.json") << "{}";
  const auto checkpoint = Checkpoint::open(dir.path());
  auto touch = [&](const TensorInfo& info) {
    volatile uint8_t sink = 0;
    for (const uint8_t* p = info.data; p < info.data + info.nbytes; p += page / 2) sink = sink + *p;
    return resident_pages(info.data, info.data + info.nbytes);
  };
  const TensorInfo& copied = checkpoint->tensor("a", a.shape());
  const TensorInfo& in_place = checkpoint->tensor("b", b.shape());
  const size_t copied_pages = touch(copied), in_place_pages = touch(in_place);
  ASSERT_GT(copied_pages, 0u);
  ASSERT_GT(in_place_pages, 0u);
  checkpoint->load_f32("a", a.shape());
  EXPECT_EQ(resident_pages(copied.data, copied.data + copied.nbytes), 0u);
  EXPECT_EQ(touch(copied), copied_pages);  // mapped back, as a neighbour's fault would
  checkpoint->release_again();
  EXPECT_EQ(resident_pages(copied.data, copied.data + copied.nbytes), 0u);
  EXPECT_EQ(resident_pages(in_place.data, in_place.data + in_place.nbytes), in_place_pages);
}
