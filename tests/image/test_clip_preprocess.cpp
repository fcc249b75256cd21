// transformers' CLIPImageProcessor (resize the shortest edge, center crop, rescale, normalise) on small
// synthetic images whose expected values follow from the processor's definition, and the
// preprocessor_config.json reader.
#include <gtest/gtest.h>

#include <unistd.h>

#include <array>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "image/preprocess.h"

namespace fastvlm {
namespace {

namespace fs = std::filesystem;

// An image whose pixel (x, y) is rgb(x, y).
Image make_image(int width, int height, auto rgb) {
  Image image{width, height, std::vector<uint8_t>(size_t(width) * height * 3)};
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      const std::array<uint8_t, 3> pixel = rgb(x, y);
      std::copy(pixel.begin(), pixel.end(), &image.rgb[(size_t(y) * width + x) * 3]);
    }
  }
  return image;
}

ImageProcessorConfig clip_config(int shortest_edge, int crop_height, int crop_width) {
  ImageProcessorConfig config;
  config.mode = ImageProcessorConfig::Mode::ResizeShortestEdgeCenterCrop;
  config.size = shortest_edge;
  config.crop_height = crop_height;
  config.crop_width = crop_width;
  return config;
}

// Raw 8-bit values out: no rescale, no normalisation.
ImageProcessorConfig raw_config(int shortest_edge, int crop_height, int crop_width) {
  ImageProcessorConfig config = clip_config(shortest_edge, crop_height, crop_width);
  config.do_rescale = false;
  return config;
}

float at(const Tensor& pixels, int c, int y, int x) {
  return pixels.data()[(int64_t(c) * pixels.shape()[2] + y) * pixels.shape()[3] + x];
}

TEST(ClipPreprocess, ConstantColourIsRescaledAndNormalisedEverywhere) {
  const std::array<uint8_t, 3> colour{200, 100, 7};
  ImageProcessorConfig config = clip_config(20, 16, 18);
  config.do_normalize = true;
  config.mean = {0.48145466f, 0.4578275f, 0.40821073f};
  config.std = {0.26862954f, 0.26130258f, 0.27577711f};
  const Tensor pixels = preprocess_image(make_image(41, 29, [&](int, int) { return colour; }), config);
  ASSERT_EQ(pixels.shape(), (std::vector<int64_t>{1, 3, 16, 18}));
  for (int c = 0; c < 3; ++c) {
    // transformers: float32(float64(v) * rescale_factor), then (x - mean) / std in float32.
    const float rescaled = float(colour[c] * (1.0 / 255));
    const float expected = (rescaled - config.mean[c]) / config.std[c];
    for (int y = 0; y < 16; ++y)
      for (int x = 0; x < 18; ++x) ASSERT_EQ(at(pixels, c, y, x), expected) << c << " " << x << "," << y;
  }
}

// get_resize_output_image_size(default_to_square=False): short side = shortest_edge, long side =
// int(shortest_edge * long / short).
TEST(ClipPreprocess, ShortestEdgeResizeKeepsTheAspectRatio) {
  struct Case {
    int width, height, shortest_edge, out_width, out_height;
  };
  for (const Case& test : {Case{40, 30, 20, 26, 20},  // 26.67
                           Case{30, 40, 20, 20, 26}, Case{7, 3, 5, 11, 5},  // 11.67
                           Case{9, 9, 4, 4, 4}, Case{3, 12, 6, 6, 24}}) {
    ImageProcessorConfig config = clip_config(test.shortest_edge, 1, 1);
    config.do_center_crop = false;
    const Tensor pixels = preprocess_image(make_image(test.width, test.height, [](int, int) {
      return std::array<uint8_t, 3>{1, 2, 3};
    }), config);
    EXPECT_EQ(pixels.shape(), (std::vector<int64_t>{1, 3, test.out_height, test.out_width}))
        << test.width << "x" << test.height << " -> " << test.shortest_edge;
  }
}

// center_crop: top = (h - crop_h) // 2, left = (w - crop_w) // 2.
TEST(ClipPreprocess, CenterCropOffsetsOnANonSquareImage) {
  ImageProcessorConfig config = raw_config(1, 3, 4);
  config.do_resize = false;
  const Image image = make_image(11, 8, [](int x, int y) { return std::array<uint8_t, 3>{uint8_t(x), uint8_t(y), 9}; });
  const Tensor pixels = preprocess_image(image, config);
  ASSERT_EQ(pixels.shape(), (std::vector<int64_t>{1, 3, 3, 4}));
  const int top = (8 - 3) / 2, left = (11 - 4) / 2;  // 2, 3
  for (int y = 0; y < 3; ++y) {
    for (int x = 0; x < 4; ++x) {
      EXPECT_EQ(at(pixels, 0, y, x), float(x + left));
      EXPECT_EQ(at(pixels, 1, y, x), float(y + top));
      EXPECT_EQ(at(pixels, 2, y, x), 9.0f);
    }
  }
}

// A crop larger than the image pads it with zeros first: transformers puts the image at
// ceil((crop - size) / 2), i.e. output (y, x) reads image (y + floor((h - crop_h) / 2), ...).
TEST(ClipPreprocess, ImageSmallerThanTheCropIsPaddedWithZeros) {
  ImageProcessorConfig config = raw_config(1, 5, 6);
  config.do_resize = false;
  config.do_rescale = true;
  config.do_normalize = true;
  config.mean = {0.5f, 0.25f, 0.0f};
  config.std = {0.5f, 2.0f, 1.0f};
  const Image image = make_image(3, 2, [](int x, int y) { return std::array<uint8_t, 3>{uint8_t(50 + x), uint8_t(60 + y), 255}; });
  const Tensor pixels = preprocess_image(image, config);
  ASSERT_EQ(pixels.shape(), (std::vector<int64_t>{1, 3, 5, 6}));
  for (int y = 0; y < 5; ++y) {
    for (int x = 0; x < 6; ++x) {
      // (2 - 5) // 2 = -2 and (3 - 6) // 2 = -2: the image covers rows 2..3 and columns 2..4.
      const bool on_image = y >= 2 && y < 4 && x >= 2 && x < 5;
      const std::array<int, 3> value = on_image ? std::array<int, 3>{50 + x - 2, 60 + y - 2, 255} : std::array<int, 3>{0, 0, 0};
      for (int c = 0; c < 3; ++c)
        EXPECT_EQ(at(pixels, c, y, x), (float(value[c] * (1.0 / 255)) - config.mean[c]) / config.std[c]) << c << " " << x << "," << y;
    }
  }
  // Larger in one direction only: rows are cropped, columns padded.
  config.crop_height = 1;
  const Tensor strip = preprocess_image(image, config);
  ASSERT_EQ(strip.shape(), (std::vector<int64_t>{1, 3, 1, 6}));
  EXPECT_EQ(at(strip, 1, 0, 2), (float(60 * (1.0 / 255)) - 0.25f) / 2.0f);  // row (2 - 1) // 2 = 0
}

// Bicubic interpolation reproduces a linear ramp exactly away from the borders, so upscaling
// R = 10x, G = 20y by 2 gives 10u and 20v at the sample positions u = (x + 0.5) / 2 - 0.5 of the
// input, up to the 8-bit rounding of each pass.
TEST(ClipPreprocess, GradientMatchesTheInterpolatedRamp) {
  const Image image = make_image(16, 8, [](int x, int y) { return std::array<uint8_t, 3>{uint8_t(10 * x), uint8_t(20 * y), 0}; });
  ImageProcessorConfig config = raw_config(16, 16, 16);  // 16x8 -> 32x16, then columns 8..23
  const Tensor pixels = preprocess_image(image, config);
  ASSERT_EQ(pixels.shape(), (std::vector<int64_t>{1, 3, 16, 16}));
  for (int y : {4, 7, 11}) {
    for (int x : {0, 5, 15}) {
      const double u = (x + 8 + 0.5) / 2 - 0.5, v = (y + 0.5) / 2 - 0.5;
      EXPECT_NEAR(at(pixels, 0, y, x), 10 * u, 1.0) << x << "," << y;
      EXPECT_NEAR(at(pixels, 1, y, x), 20 * v, 1.0) << x << "," << y;
      EXPECT_EQ(at(pixels, 2, y, x), 0.0f);
    }
  }
}

// The PadToSquare mode is FastVLM's preprocessing: preprocess_image(image, size).
TEST(ClipPreprocess, PadToSquareModeIsTheFastVlmPath) {
  const Image image = make_image(23, 13, [](int x, int y) { return std::array<uint8_t, 3>{uint8_t(11 * x), uint8_t(19 * y), uint8_t(x * y)}; });
  ImageProcessorConfig config;
  config.size = config.crop_height = config.crop_width = 32;
  const Tensor from_config = preprocess_image(image, config);
  const Tensor from_size = preprocess_image(image, 32);
  ASSERT_EQ(from_config.shape(), from_size.shape());
  EXPECT_EQ(std::memcmp(from_config.data(), from_size.data(), from_size.numel() * sizeof(float)), 0);
}

TEST(ClipPreprocess, RejectsSizesThatAreNotPositive) {
  const Image image = make_image(4, 4, [](int, int) { return std::array<uint8_t, 3>{}; });
  EXPECT_THROW(preprocess_image(image, clip_config(0, 4, 4)), Error);
  EXPECT_THROW(preprocess_image(image, clip_config(4, 0, 4)), Error);
}

class ConfigFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("fastvlm_clip_" + std::to_string(getpid()) + "_" +
                                        testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path write(const std::string& json) {
    const fs::path file = dir_ / "preprocessor_config.json";
    std::ofstream(file) << json;
    return file;
  }

  // The error names the file and `key`.
  void expect_error(const std::string& json, const std::string& key) {
    const fs::path file = write(json);
    try {
      read_image_processor_config(file);
      ADD_FAILURE() << "accepted " << json;
    } catch (const Error& error) {
      const std::string message = error.what();
      EXPECT_NE(message.find(file.string()), std::string::npos) << message;
      EXPECT_NE(message.find(key), std::string::npos) << message;
    }
  }

  fs::path dir_;
};

TEST_F(ConfigFiles, ReadsAFastVlmConversion) {
  const ImageProcessorConfig config = read_image_processor_config(write(R"({
    "crop_size": {"height": 1024, "width": 1024}, "do_center_crop": true, "do_convert_rgb": true,
    "do_normalize": false, "do_rescale": true, "do_resize": true, "image_mean": [0.0, 0.0, 0.0],
    "image_processor_type": "CLIPImageProcessor", "image_std": [1.0, 1.0, 1.0], "resample": 3,
    "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 1024}})"));
  EXPECT_EQ(config.mode, ImageProcessorConfig::Mode::ResizeShortestEdgeCenterCrop);
  EXPECT_EQ(config.size, 1024);
  EXPECT_EQ(config.crop_height, 1024);
  EXPECT_EQ(config.crop_width, 1024);
  EXPECT_TRUE(config.do_resize && config.do_center_crop && config.do_rescale);
  EXPECT_FALSE(config.do_normalize);
  EXPECT_EQ(config.rescale_factor, 0.00392156862745098);
  EXPECT_EQ(config.mean, (std::array<float, 3>{0, 0, 0}));
  EXPECT_EQ(config.std, (std::array<float, 3>{1, 1, 1}));
}

TEST_F(ConfigFiles, MissingKeysTakeClipDefaults) {
  const ImageProcessorConfig config = read_image_processor_config(
      write(R"({"image_processor_type": "CLIPImageProcessorFast", "size": 336, "crop_size": 300, "image_std": 0.5})"));
  EXPECT_EQ(config.size, 336);
  EXPECT_EQ(config.crop_height, 300);
  EXPECT_EQ(config.crop_width, 300);
  EXPECT_TRUE(config.do_resize && config.do_center_crop && config.do_rescale && config.do_normalize);
  EXPECT_EQ(config.rescale_factor, 1.0 / 255);
  EXPECT_EQ(config.mean, (std::array<float, 3>{0.48145466f, 0.4578275f, 0.40821073f}));
  EXPECT_EQ(config.std, (std::array<float, 3>{0.5f, 0.5f, 0.5f}));
}

TEST_F(ConfigFiles, RejectsWhatItCannotHonour) {
  expect_error(R"({"image_processor_type": "SiglipImageProcessor"})", "image_processor_type");
  expect_error(R"({"size": 224})", "image_processor_type");
  expect_error(R"({"image_processor_type": "CLIPImageProcessor", "resample": 2})", "resample");
  expect_error(R"({"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": -3}})", "size.shortest_edge");
  expect_error(R"({"image_processor_type": "CLIPImageProcessor", "size": {"height": 3, "width": 3}})", "size");
  expect_error(R"({"image_processor_type": "CLIPImageProcessor", "crop_size": {"height": 0, "width": 3}})", "crop_size.height");
  expect_error(R"({"image_processor_type": "CLIPImageProcessor", "crop_size": "big"})", "crop_size");
  expect_error(R"({"image_processor_type": "CLIPImageProcessor", "do_normalize": "yes"})", "do_normalize");
  expect_error(R"({"image_processor_type": "CLIPImageProcessor", "image_mean": [0.5, 0.5]})", "image_mean");
  expect_error(R"({"image_processor_type": "CLIPImageProcessor", "image_std": [1, "x", 1]})", "image_std[1]");
  expect_error(R"({"image_processor_type": "CLIPImageProcessor", "image_std": [1, 0, 1]})", "image_std");
  expect_error(R"({"image_processor_type": "CLIPImageProcessor", "rescale_factor": "1/255"})", "rescale_factor");
  expect_error(R"([1, 2])", "expected a JSON object");
  expect_error(R"({"image_processor_type": )", "invalid JSON");
  EXPECT_THROW(read_image_processor_config(dir_ / "missing.json"), Error);
}

}  // namespace
}  // namespace fastvlm
