// Image decoding and preprocessing against the tiny-fastvlm goldens (produced with Pillow), plus
// constructed images whose Pillow `convert('RGB')` result follows from Pillow's documented conversions.
#include <gtest/gtest.h>
#include <jpeglib.h>
#include <png.h>
#include <webp/encode.h>

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "image/decode.h"
#include "image/preprocess.h"
#include "io/safetensors.h"

namespace fastvlm {
namespace {

namespace fs = std::filesystem;

const fs::path kGoldenDir = fs::path(FASTVLM_SHARED_DIR) / "fixtures" / "tiny-fastvlm" / "golden";

std::vector<uint8_t> read_bytes(const fs::path& path) {
  std::ifstream file(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
}

// A scratch directory per test, removed afterwards.
class ImageFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("fastvlm_image_test_" + std::string(info->name()) + "_" +
                                        std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path write_file(const std::string& name, const std::vector<uint8_t>& bytes) {
    const fs::path path = dir_ / name;
    std::ofstream(path, std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    return path;
  }

  // Expects decoding `path` to fail with a fastvlm::Error naming the file and mentioning `problem`.
  void expect_decode_error(const fs::path& path, const std::string& problem) {
    try {
      decode_image_file(path);
      FAIL() << "decoding " << path << " should have failed";
    } catch (const Error& error) {
      const std::string message = error.what();
      EXPECT_NE(message.find(path.string()), std::string::npos) << message;
      EXPECT_NE(message.find(problem), std::string::npos) << message;
    }
  }

  fs::path dir_;
};

// ------------------------------------------------------------------------------------------------
// Goldens

// Compares a float tensor with the golden F32 tensor `key`; returns max |difference|.
float max_abs_diff(const float* values, size_t count, const SafetensorsFile& golden, const std::string& key,
                   const Shape& expected_shape) {
  const TensorInfo* info = golden.find(key);
  EXPECT_NE(info, nullptr) << key;
  if (!info) return INFINITY;
  EXPECT_EQ(info->dtype, DType::F32);
  EXPECT_EQ(info->shape, expected_shape) << key;
  EXPECT_EQ(info->nbytes, count * sizeof(float)) << key;
  if (info->nbytes != count * sizeof(float)) return INFINITY;
  std::vector<float> reference(count);
  std::memcpy(reference.data(), info->data, info->nbytes);
  float worst = 0;
  for (size_t i = 0; i < count; ++i) worst = std::max(worst, std::abs(values[i] - reference[i]));
  return worst;
}

void expect_pixel_values_exact(const std::string& image_file, const std::string& tensors_file) {
  const Image image = decode_image_file(kGoldenDir / image_file);
  const Tensor pixels = preprocess_image(image, 256);
  ASSERT_EQ(pixels.shape(), (Shape{1, 3, 256, 256}));
  const auto golden = SafetensorsFile::open(kGoldenDir / tensors_file);
  EXPECT_EQ(max_abs_diff(pixels.data(), size_t(pixels.numel()), *golden, "pixel_values", {1, 3, 256, 256}), 0.0f);
}

TEST(Golden, PngPixelValuesAreBitExact) {  // landscape, padded top/bottom, downscaled 320 -> 256
  expect_pixel_values_exact("image_a_320x200.png", "image_a_320x200.safetensors");
}

TEST(Golden, JpegPixelValuesAreBitExact) {  // portrait, padded left/right, upscaled 131 -> 256
  expect_pixel_values_exact("image_b_97x131.jpg", "image_b_97x131.safetensors");
}

TEST(Golden, JpegDecodesToPillowsRgb) {
  const Image image = decode_image_file(kGoldenDir / "image_b_97x131.jpg");
  ASSERT_EQ(image.width, 97);
  ASSERT_EQ(image.height, 131);
  const std::vector<float> as_float(image.rgb.begin(), image.rgb.end());
  const auto golden = SafetensorsFile::open(kGoldenDir / "image_b_97x131.safetensors");
  EXPECT_EQ(max_abs_diff(as_float.data(), as_float.size(), *golden, "decoded_rgb", {131, 97, 3}), 0.0f);
}

TEST(Golden, PadToSquareCentresWithIntegerDivision) {
  const Image image = decode_image_file(kGoldenDir / "image_b_97x131.jpg");
  const Image square = pad_to_square(image);
  ASSERT_EQ(square.width, 131);
  ASSERT_EQ(square.height, 131);
  const int x0 = (131 - 97) / 2;  // 17
  for (int y = 0; y < 131; ++y) {
    for (int x = 0; x < 131; ++x) {
      const bool inside = x >= x0 && x < x0 + 97;
      for (int c = 0; c < 3; ++c) {
        const uint8_t expected = inside ? image.rgb[(size_t(y) * 97 + (x - x0)) * 3 + c] : 0;
        ASSERT_EQ(square.rgb[(size_t(y) * 131 + x) * 3 + c], expected) << x << "," << y;
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Bad input: each a fastvlm::Error naming the file

TEST_F(ImageFiles, EmptyFileIsRejected) { expect_decode_error(write_file("empty.png", {}), "empty"); }

TEST_F(ImageFiles, TruncatedJpegIsRejected) {
  std::vector<uint8_t> bytes = read_bytes(kGoldenDir / "image_b_97x131.jpg");
  bytes.resize(bytes.size() / 2);
  expect_decode_error(write_file("half.jpg", bytes), "JPEG");
}

TEST_F(ImageFiles, TruncatedPngIsRejected) {
  std::vector<uint8_t> bytes = read_bytes(kGoldenDir / "image_a_320x200.png");
  bytes.resize(bytes.size() / 2);
  expect_decode_error(write_file("half.png", bytes), "PNG");
}

uint32_t crc32_of(const uint8_t* data, size_t size) {
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < size; ++i) {
    crc ^= data[i];
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

void append_be32(std::vector<uint8_t>& out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(uint8_t(value >> shift));
}

// A PNG whose IHDR claims `width` x `height` 8-bit samples of `color_type`, then a valid IDAT holding
// nothing (a zlib stream of no bytes) and IEND: 68 bytes whose only fault is the claimed size.
std::vector<uint8_t> png_claiming(uint32_t width, uint32_t height, uint8_t color_type) {
  std::vector<uint8_t> png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  std::vector<uint8_t> ihdr = {'I', 'H', 'D', 'R'};
  append_be32(ihdr, width);
  append_be32(ihdr, height);
  ihdr.insert(ihdr.end(), {8, color_type, 0, 0, 0});  // 8-bit, deflate, no filter, no interlace
  append_be32(png, 13);
  png.insert(png.end(), ihdr.begin(), ihdr.end());
  append_be32(png, crc32_of(ihdr.data(), ihdr.size()));
  // Then a valid IDAT (a zlib stream of nothing) and IEND: the only thing wrong is the claimed size.
  const std::vector<uint8_t> idat = {'I', 'D', 'A', 'T', 0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01};
  append_be32(png, uint32_t(idat.size() - 4));
  png.insert(png.end(), idat.begin(), idat.end());
  append_be32(png, crc32_of(idat.data(), idat.size()));
  const uint8_t iend[] = {'I', 'E', 'N', 'D'};
  append_be32(png, 0);
  png.insert(png.end(), iend, iend + 4);
  append_be32(png, crc32_of(iend, 4));
  return png;
}

TEST_F(ImageFiles, PngClaimingTenGigapixelsIsRejectedBeforeAllocating) {
  expect_decode_error(write_file("huge.png", png_claiming(100000, 100000, PNG_COLOR_TYPE_RGB)), "100000x100000");
}

// Within every pixel limit, but 65 bytes cannot inflate to 268 MB of samples (deflate's ratio is at most
// 1032:1): refused before the 440 MB of buffers were allocated.
TEST_F(ImageFiles, PngTooSmallForItsClaimedSizeIsRejectedBeforeAllocating) {
  const std::vector<uint8_t> png = png_claiming(8192, 8192, PNG_COLOR_TYPE_RGBA);
  EXPECT_LT(png.size(), 100u);
  expect_decode_error(write_file("claims_8192.png", png), "cannot hold");
}

// The 6 kB golden JPEG with its frame header claiming 8192 x 8192: once decoded as grey into 200 MB.
TEST_F(ImageFiles, JpegTooSmallForItsClaimedSizeIsRejected) {
  std::vector<uint8_t> jpeg = read_bytes(kGoldenDir / "image_b_97x131.jpg");
  size_t sof = 2;
  while (sof + 9 < jpeg.size() && !(jpeg[sof] == 0xFF && jpeg[sof + 1] >= 0xC0 && jpeg[sof + 1] <= 0xC2)) ++sof;
  ASSERT_LT(sof + 9, jpeg.size());
  for (size_t at : {sof + 5, sof + 7}) {  // height, width: big-endian 16 bits
    jpeg[at] = 8192 >> 8;
    jpeg[at + 1] = 8192 & 0xFF;
  }
  expect_decode_error(write_file("claims_8192.jpg", jpeg), "cannot hold");
}

// A 30-byte lossless WebP header claiming 16000 x 4000: once a 192 MB buffer before failing.
TEST_F(ImageFiles, WebpTooSmallForItsClaimedSizeIsRejectedBeforeAllocating) {
  const uint32_t w = 16000 - 1, h = 4000 - 1;  // VP8L stores size - 1 in 14 bits each
  const uint32_t bits = w | h << 14;            // then alpha and version bits, 0
  std::vector<uint8_t> webp = {'R', 'I', 'F', 'F', 22, 0, 0, 0, 'W', 'E', 'B', 'P', 'V', 'P', '8', 'L', 10, 0, 0, 0,
                               0x2F, uint8_t(bits), uint8_t(bits >> 8), uint8_t(bits >> 16), uint8_t(bits >> 24),
                               0, 0, 0, 0, 0};
  EXPECT_EQ(webp.size(), 30u);
  expect_decode_error(write_file("claims_16000.webp", webp), "cannot hold");
}


TEST_F(ImageFiles, PixelLimitIsConfigurable) {
  DecodeOptions options;
  options.max_pixels = 320 * 200 - 1;
  EXPECT_THROW(decode_image_file(kGoldenDir / "image_a_320x200.png", options), Error);
  options.max_pixels = 320 * 200;
  EXPECT_EQ(decode_image_file(kGoldenDir / "image_a_320x200.png", options).width, 320);
}

TEST_F(ImageFiles, RandomBytesAreRejected) {
  std::mt19937 generator(1234);
  std::vector<uint8_t> bytes(4096);
  for (auto& b : bytes) b = uint8_t(generator());
  bytes[0] = 'x';  // make sure no magic number matches by chance
  expect_decode_error(write_file("noise.jpg", bytes), "unrecognised image format");
}

TEST_F(ImageFiles, CorruptJpegBodyIsRejected) {
  // A valid JPEG header followed by noise instead of the entropy-coded data and tables after SOI.
  std::vector<uint8_t> bytes = read_bytes(kGoldenDir / "image_b_97x131.jpg");
  std::mt19937 generator(99);
  for (size_t i = 2; i < bytes.size(); ++i) bytes[i] = uint8_t(generator());
  expect_decode_error(write_file("noise_body.jpg", bytes), "JPEG");
}

TEST_F(ImageFiles, MissingFileIsRejected) { expect_decode_error(dir_ / "does_not_exist.png", "cannot open"); }

// ------------------------------------------------------------------------------------------------
// Constructed PNGs: expected values are Pillow's convert('RGB') of the same pixels.

struct PngSpec {
  int width, height, bit_depth, color_type;
  std::vector<uint8_t> samples;  // rows packed as PNG stores them (16-bit samples big-endian)
  std::vector<png_color> palette = {};
  std::vector<uint8_t> palette_alpha = {};  // tRNS for palette images
  bool interlaced = false;
};

std::vector<uint8_t> encode_png(const PngSpec& spec) {
  std::vector<uint8_t> out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    ADD_FAILURE() << "libpng failed to encode the test image";
    return {};
  }
  png_set_write_fn(
      png, &out,
      [](png_structp p, png_bytep data, size_t size) {
        auto* sink = static_cast<std::vector<uint8_t>*>(png_get_io_ptr(p));
        sink->insert(sink->end(), data, data + size);
      },
      nullptr);
  png_set_IHDR(png, info, spec.width, spec.height, spec.bit_depth, spec.color_type,
               spec.interlaced ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  if (!spec.palette.empty()) png_set_PLTE(png, info, spec.palette.data(), int(spec.palette.size()));
  if (!spec.palette_alpha.empty())
    png_set_tRNS(png, info, spec.palette_alpha.data(), int(spec.palette_alpha.size()), nullptr);
  png_write_info(png, info);
  const size_t row_bytes = spec.samples.size() / spec.height;
  std::vector<png_bytep> rows(spec.height);
  for (int y = 0; y < spec.height; ++y) rows[y] = const_cast<uint8_t*>(&spec.samples[y * row_bytes]);
  png_write_image(png, rows.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

void expect_rgb(const Image& image, int width, int height, const std::vector<uint8_t>& rgb) {
  EXPECT_EQ(image.width, width);
  EXPECT_EQ(image.height, height);
  EXPECT_EQ(image.rgb, rgb);
}

TEST(ConstructedPng, GreyIsReplicatedToRgb) {
  const Image image = decode_image_memory(encode_png({3, 1, 8, PNG_COLOR_TYPE_GRAY, {0, 77, 255}}));
  expect_rgb(image, 3, 1, {0, 0, 0, 77, 77, 77, 255, 255, 255});
}

TEST(ConstructedPng, TwoBitGreyIsScaledTo255) {
  // Four 2-bit samples 0,1,2,3 in one byte; Pillow's "L;2" unpacks them as 0, 85, 170, 255.
  const Image image = decode_image_memory(encode_png({4, 1, 2, PNG_COLOR_TYPE_GRAY, {0b00011011}}));
  expect_rgb(image, 4, 1, {0, 0, 0, 85, 85, 85, 170, 170, 170, 255, 255, 255});
}

TEST(ConstructedPng, PaletteIsLookedUpAndItsTransparencyIgnored) {
  PngSpec spec{3, 1, 8, PNG_COLOR_TYPE_PALETTE, {2, 0, 1}};
  spec.palette = {{10, 20, 30}, {40, 50, 60}, {200, 100, 0}};
  spec.palette_alpha = {0, 128, 255};
  expect_rgb(decode_image_memory(encode_png(spec)), 3, 1, {200, 100, 0, 10, 20, 30, 40, 50, 60});
}

TEST(ConstructedPng, FourBitPaletteIsLookedUp) {
  PngSpec spec{2, 1, 4, PNG_COLOR_TYPE_PALETTE, {0x10}};  // indices 1, 0
  spec.palette = {{1, 2, 3}, {4, 5, 6}};
  expect_rgb(decode_image_memory(encode_png(spec)), 2, 1, {4, 5, 6, 1, 2, 3});
}

TEST(ConstructedPng, AlphaIsDroppedNotComposited) {
  const Image image = decode_image_memory(
      encode_png({2, 1, 8, PNG_COLOR_TYPE_RGBA, {10, 20, 30, 0, 200, 150, 100, 128}}));
  expect_rgb(image, 2, 1, {10, 20, 30, 200, 150, 100});
}

TEST(ConstructedPng, GreyAlphaDropsAlpha) {
  const Image image = decode_image_memory(encode_png({2, 1, 8, PNG_COLOR_TYPE_GRAY_ALPHA, {9, 0, 250, 7}}));
  expect_rgb(image, 2, 1, {9, 9, 9, 250, 250, 250});
}

TEST(ConstructedPng, SixteenBitRgbKeepsTheHighByte) {
  // Pillow unpacks "RGB;16B" by taking the most significant byte of each sample.
  const Image image = decode_image_memory(
      encode_png({1, 1, 16, PNG_COLOR_TYPE_RGB, {0x12, 0xFF, 0xAB, 0x01, 0x00, 0x80}}));
  expect_rgb(image, 1, 1, {0x12, 0xAB, 0x00});
}

TEST(ConstructedPng, SixteenBitRgbaKeepsTheHighByteAndDropsAlpha) {
  const Image image = decode_image_memory(
      encode_png({1, 1, 16, PNG_COLOR_TYPE_RGBA, {0x80, 0x7F, 0x00, 0xFF, 0xFE, 0x01, 0x00, 0x00}}));
  expect_rgb(image, 1, 1, {0x80, 0x00, 0xFE});
}

TEST(ConstructedPng, SixteenBitGreyIsClampedLikePillowsI16) {
  // Pillow opens 16-bit grey as "I;16"; its conversion to RGB clamps the integer to 0..255
  // (it does not take the high byte): 0x0064 -> 100, 0x00FF -> 255, 0x0100 -> 255, 0xFFFF -> 255.
  const Image image = decode_image_memory(
      encode_png({4, 1, 16, PNG_COLOR_TYPE_GRAY, {0x00, 0x64, 0x00, 0xFF, 0x01, 0x00, 0xFF, 0xFF}}));
  expect_rgb(image, 4, 1, {100, 100, 100, 255, 255, 255, 255, 255, 255, 255, 255, 255});
}

TEST(ConstructedPng, SixteenBitGreyAlphaKeepsTheHighByte) {
  // Pillow unpacks "LA;16B" through the most significant bytes.
  const Image image = decode_image_memory(
      encode_png({1, 1, 16, PNG_COLOR_TYPE_GRAY_ALPHA, {0x42, 0xFF, 0x00, 0x10}}));
  expect_rgb(image, 1, 1, {0x42, 0x42, 0x42});
}

TEST(ConstructedPng, InterlacedImageDecodes) {
  std::vector<uint8_t> samples(9 * 9 * 3);
  for (size_t i = 0; i < samples.size(); ++i) samples[i] = uint8_t(i * 7);
  PngSpec spec{9, 9, 8, PNG_COLOR_TYPE_RGB, samples};
  spec.interlaced = true;
  expect_rgb(decode_image_memory(encode_png(spec)), 9, 9, samples);
}

// ------------------------------------------------------------------------------------------------
// Constructed JPEGs and WebP. Flat 8x8 blocks at quality 100 without subsampling survive the DCT
// exactly, so the expected colours are known.

std::vector<uint8_t> encode_jpeg(int width, int height, int components, J_COLOR_SPACE space,
                                 const std::vector<uint8_t>& samples, const std::vector<uint8_t>& app1 = {}) {
  jpeg_compress_struct cinfo;
  jpeg_error_mgr errors;
  cinfo.err = jpeg_std_error(&errors);
  jpeg_create_compress(&cinfo);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&cinfo, &buffer, &size);
  cinfo.image_width = width;
  cinfo.image_height = height;
  cinfo.input_components = components;
  cinfo.in_color_space = space;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, 100, TRUE);
  for (int c = 0; c < components; ++c) cinfo.comp_info[c].h_samp_factor = cinfo.comp_info[c].v_samp_factor = 1;
  jpeg_start_compress(&cinfo, TRUE);
  if (!app1.empty()) jpeg_write_marker(&cinfo, JPEG_APP0 + 1, app1.data(), unsigned(app1.size()));
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(&samples[size_t(cinfo.next_scanline) * width * components]);
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::vector<uint8_t> out(buffer, buffer + size);
  std::free(buffer);
  return out;
}

TEST(ConstructedJpeg, GreyIsReplicatedToRgb) {
  const Image image = decode_image_memory(encode_jpeg(8, 8, 1, JCS_GRAYSCALE, std::vector<uint8_t>(64, 77)));
  expect_rgb(image, 8, 8, std::vector<uint8_t>(64 * 3, 77));
}

TEST(ConstructedJpeg, CmykIsReadAsAdobeInvertedLikePillow) {
  // Stored (0, 128, 255, 200). Pillow: inverted c,m,y,k = (255, 127, 0, 55); with nk = 255 - 55 = 200,
  // R = 200 - round(255 * 200 / 255) = 0, G = 200 - round(127 * 200 / 255) = 200 - 100 = 100,
  // B = 200 - 0 = 200.
  std::vector<uint8_t> samples;
  for (int i = 0; i < 64; ++i) samples.insert(samples.end(), {0, 128, 255, 200});
  const Image image = decode_image_memory(encode_jpeg(8, 8, 4, JCS_CMYK, samples));
  std::vector<uint8_t> expected;
  for (int i = 0; i < 64; ++i) expected.insert(expected.end(), {0, 100, 200});
  expect_rgb(image, 8, 8, expected);
}

// A 16x8 JPEG, black left block and white right block, with an EXIF orientation tag.
std::vector<uint8_t> jpeg_with_orientation(uint16_t orientation) {
  std::vector<uint8_t> samples(16 * 8 * 3);
  for (int y = 0; y < 8; ++y)
    for (int x = 8; x < 16; ++x)
      for (int c = 0; c < 3; ++c) samples[(y * 16 + x) * 3 + c] = 255;
  // "Exif\0\0", little-endian TIFF header, IFD0 at 8 with one SHORT entry (tag 0x0112).
  const std::vector<uint8_t> exif = {'E', 'x', 'i', 'f', 0, 0, 'I', 'I', 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3, 0,
                                     1, 0, 0, 0, uint8_t(orientation), 0, 0, 0, 0, 0, 0, 0};
  return encode_jpeg(16, 8, 3, JCS_RGB, samples, exif);
}

uint8_t red_at(const Image& image, int x, int y) { return image.rgb[(size_t(y) * image.width + x) * 3]; }

TEST(ConstructedJpeg, ExifOrientationIsIgnoredByDefault) {
  const Image image = decode_image_memory(jpeg_with_orientation(6));
  EXPECT_EQ(image.width, 16);
  EXPECT_EQ(image.height, 8);
  EXPECT_LT(red_at(image, 2, 4), 10);
  EXPECT_GT(red_at(image, 13, 4), 245);
}

TEST(ConstructedJpeg, ExifOrientationIsAppliedOnRequest) {
  DecodeOptions options;
  options.apply_exif_orientation = true;
  // 6: rotate 90 degrees clockwise, so the black left half becomes the top.
  const Image rotated = decode_image_memory(jpeg_with_orientation(6), options);
  ASSERT_EQ(rotated.width, 8);
  ASSERT_EQ(rotated.height, 16);
  EXPECT_LT(red_at(rotated, 4, 2), 10);
  EXPECT_GT(red_at(rotated, 4, 13), 245);
  // 8: rotate 90 degrees counter-clockwise, so the black left half becomes the bottom.
  const Image counter = decode_image_memory(jpeg_with_orientation(8), options);
  ASSERT_EQ(counter.height, 16);
  EXPECT_GT(red_at(counter, 4, 2), 245);
  EXPECT_LT(red_at(counter, 4, 13), 10);
  // 2: mirrored, so black moves to the right.
  const Image mirrored = decode_image_memory(jpeg_with_orientation(2), options);
  ASSERT_EQ(mirrored.width, 16);
  EXPECT_GT(red_at(mirrored, 2, 4), 245);
  EXPECT_LT(red_at(mirrored, 13, 4), 10);
}

TEST(ConstructedWebp, LosslessRgbaDecodesWithAlphaDropped) {
  const std::vector<uint8_t> rgba = {10, 20, 30, 255, 200, 150, 100, 128, 1, 2, 3, 64, 250, 251, 252, 255};
  uint8_t* encoded = nullptr;
  const size_t size = WebPEncodeLosslessRGBA(rgba.data(), 2, 2, 2 * 4, &encoded);
  ASSERT_GT(size, 0u);
  const std::vector<uint8_t> bytes(encoded, encoded + size);
  WebPFree(encoded);
  expect_rgb(decode_image_memory(bytes), 2, 2, {10, 20, 30, 200, 150, 100, 1, 2, 3, 250, 251, 252});
  EXPECT_THROW(decode_image_memory(std::span(bytes).first(bytes.size() / 2)), Error);
}

// A complete, valid strip: decoding it is cheap, but padding it to a square is not (a 1,000,000 x 1 PNG
// of 11 kB once cost 960 MB). Sides and aspect ratios are bounded at decoding and at preprocessing.
TEST_F(ImageFiles, ExtremeAspectRatioIsRejected) {
  const std::vector<uint8_t> strip = encode_png({4096, 1, 8, PNG_COLOR_TYPE_GRAY, std::vector<uint8_t>(4096, 200)});
  expect_decode_error(write_file("strip.png", strip), "aspect ratio");
  const std::vector<uint8_t> tall = encode_png({1, 65, 8, PNG_COLOR_TYPE_GRAY, std::vector<uint8_t>(65, 200)});
  expect_decode_error(write_file("tall.png", tall), "aspect ratio");
  EXPECT_EQ(decode_image_memory(encode_png({64, 1, 8, PNG_COLOR_TYPE_GRAY, std::vector<uint8_t>(64, 200)})).width, 64);
  expect_decode_error(write_file("wide.png", png_claiming(20000, 400, PNG_COLOR_TYPE_GRAY)), "a side");

  const Image in_memory{65, 1, std::vector<uint8_t>(65 * 3, 9)};
  try {
    preprocess_image(in_memory, 64);
    ADD_FAILURE() << "a 65:1 image must be refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("aspect ratio"), std::string::npos) << e.what();
  }
}

// ------------------------------------------------------------------------------------------------
// Preprocessing edge cases

TEST(Preprocess, SizePreservingResizeIsIdentity) {
  Image image{5, 4, std::vector<uint8_t>(5 * 4 * 3)};
  for (size_t i = 0; i < image.rgb.size(); ++i) image.rgb[i] = uint8_t(i * 37);
  EXPECT_EQ(resize_bicubic(image, 5, 4).rgb, image.rgb);
}

// preprocess_image resizes the padded canvas without building it; it must give exactly what the
// explicit pad-then-resize gives, for padding on either axis, reduction, enlargement and no resize.
TEST(Preprocess, FusedPaddingMatchesExplicitPadding) {
  std::mt19937 generator(7);
  for (const auto& [width, height, size] : {std::tuple{37, 23, 16}, {23, 37, 16}, {50, 31, 64}, {31, 50, 50},
                                            {40, 40, 24}, {3, 1, 8}}) {
    Image image{width, height, std::vector<uint8_t>(size_t(width) * height * 3)};
    for (auto& v : image.rgb) v = uint8_t(generator());
    const Tensor fused = preprocess_image(image, size);
    const Tensor explicit_padding = to_pixel_values(resize_bicubic(pad_to_square(image), size, size));
    ASSERT_EQ(fused.shape(), explicit_padding.shape());
    EXPECT_EQ(std::memcmp(fused.data(), explicit_padding.data(), size_t(fused.numel()) * sizeof(float)), 0)
        << width << "x" << height << " -> " << size;
  }
}

TEST(Preprocess, RejectsEmptyImagesAndSizes) {
  EXPECT_THROW(preprocess_image(Image{}, 256), Error);
  EXPECT_THROW(preprocess_image(Image{2, 2, std::vector<uint8_t>(12)}, 0), Error);
}

}  // namespace
}  // namespace fastvlm
