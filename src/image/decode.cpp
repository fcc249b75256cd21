#include "image/decode.h"

#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

// libjpeg's headers need size_t and FILE declared first.
#include <jerror.h>
#include <jpeglib.h>
#include <png.h>
#include <webp/decode.h>

#include "core/error.h"

namespace fastvlm {
namespace {

constexpr int kChannels = 3;

[[noreturn]] void fail(std::string_view source, const std::string& problem) {
  throw Error("image '" + std::string(source) + "': " + problem);
}

bool starts_with(std::span<const uint8_t> bytes, std::string_view magic, size_t offset = 0) {
  return bytes.size() >= offset + magic.size() &&
         std::memcmp(bytes.data() + offset, magic.data(), magic.size()) == 0;
}

// Checked on the header's dimensions, before any pixel memory is allocated.
void check_dimensions(int64_t width, int64_t height, const DecodeOptions& options, std::string_view source) {
  const std::string size = std::to_string(width) + "x" + std::to_string(height);
  if (width <= 0 || height <= 0) fail(source, "invalid dimensions " + size);
  if (width > kMaxImageSide || height > kMaxImageSide)
    fail(source, "the header claims " + size + ", over the limit of " + std::to_string(kMaxImageSide) + " pixels a side");
  if (width > height * kMaxAspectRatio || height > width * kMaxAspectRatio)
    fail(source, "the header claims " + size + ", an aspect ratio over the limit of " +
                     std::to_string(kMaxAspectRatio) + ":1");
  if (width * height > options.max_pixels)
    fail(source, "the header claims " + size + " = " + std::to_string(width * height) +
                     " pixels, more than the limit of " + std::to_string(options.max_pixels));
}

// The output buffer is sized from the header, so a few bytes claiming a large image must not cost its
// memory: the claimed size has to be one the data could hold. For PNG the bound is exact: deflate
// expands at most 1032-fold, so the file holds at least a 1032nd of the decoded samples. JPEG and WebP
// can describe a flat image in less (progressive JPEG end-of-band runs, lossless WebP's one-symbol codes),
// so they are held to at most 4096 pixels a byte: no photo or screenshot comes near (even a blank 4K
// screenshot takes over 1 kB), while a 6 kB file can no longer claim 8192 x 8192.
constexpr int64_t kDeflateMaxRatio = 1032;
constexpr int64_t kMaxPixelsPerByte = 4096;

void check_plausible_size(int64_t decoded_units, int64_t bytes, int64_t max_units_per_byte, const std::string& units,
                          std::string_view source) {
  if (decoded_units > bytes * max_units_per_byte)
    fail(source, "truncated or implausible: " + std::to_string(bytes) + " bytes cannot hold the " +
                     std::to_string(decoded_units) + " " + units + " the header claims");
}

Image allocate_image(int width, int height) {
  return Image{width, height, std::vector<uint8_t>(size_t(width) * height * kChannels)};
}

// ---------------------------------------------------------------------------------------------------
// EXIF orientation (opt-in)

// Reads tag 0x0112 (Orientation) from IFD0 of a TIFF-structured EXIF block; 1 (upright) when absent
// or malformed, since a broken EXIF block should not make an otherwise valid image undecodable.
int exif_orientation(std::span<const uint8_t> tiff) {
  if (tiff.size() < 8) return 1;
  const bool little_endian = starts_with(tiff, "II");
  if (!little_endian && !starts_with(tiff, "MM")) return 1;
  auto read16 = [&](size_t at) -> uint32_t {
    return little_endian ? tiff[at] | tiff[at + 1] << 8 : tiff[at] << 8 | tiff[at + 1];
  };
  auto read32 = [&](size_t at) -> uint32_t {
    return little_endian ? read16(at) | read16(at + 2) << 16 : read16(at) << 16 | read16(at + 2);
  };
  const size_t ifd = read32(4);
  if (ifd + 2 > tiff.size()) return 1;
  const uint32_t entries = read16(ifd);
  for (uint32_t i = 0; i < entries; ++i) {
    const size_t entry = ifd + 2 + size_t(i) * 12;
    if (entry + 12 > tiff.size()) return 1;
    constexpr uint32_t kOrientationTag = 0x0112, kShortType = 3;
    if (read16(entry) == kOrientationTag && read16(entry + 2) == kShortType) {
      const uint32_t value = read16(entry + 8);
      return value >= 1 && value <= 8 ? int(value) : 1;
    }
  }
  return 1;
}

// Turns an image stored with EXIF orientation `orientation` upright (what Pillow's
// ImageOps.exif_transpose does): output pixel (x, y) comes from the source pixel computed below.
Image apply_orientation(const Image& image, int orientation) {
  if (orientation == 1) return image;
  const int w = image.width, h = image.height;
  const bool swaps_axes = orientation >= 5;
  Image out = allocate_image(swaps_axes ? h : w, swaps_axes ? w : h);
  for (int y = 0; y < out.height; ++y) {
    for (int x = 0; x < out.width; ++x) {
      int sx = x, sy = y;
      switch (orientation) {
        case 2: sx = w - 1 - x; break;                      // mirrored
        case 3: sx = w - 1 - x; sy = h - 1 - y; break;      // rotated 180
        case 4: sy = h - 1 - y; break;                      // flipped vertically
        case 5: sx = y; sy = x; break;                      // transposed
        case 6: sx = y; sy = h - 1 - x; break;              // needs 90 degrees clockwise
        case 7: sx = w - 1 - y; sy = h - 1 - x; break;      // transversed
        case 8: sx = w - 1 - y; sy = x; break;              // needs 90 degrees counter-clockwise
      }
      std::memcpy(&out.rgb[(size_t(y) * out.width + x) * kChannels], &image.rgb[(size_t(sy) * w + sx) * kChannels],
                  kChannels);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// JPEG (libjpeg-turbo)
//
// libjpeg reports errors through a callback that must not return. We longjmp back to a setjmp taken
// in `jpeg_guarded`, whose frame and the lambda it runs hold no C++ objects with destructors, so the
// jump skips nothing that needs cleaning up; the caller then throws normally.

struct JpegErrorManager {
  jpeg_error_mgr base;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

[[noreturn]] void jpeg_on_error(j_common_ptr cinfo) {
  auto* manager = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  cinfo->err->format_message(cinfo, manager->message);
  std::longjmp(manager->jump, 1);
}

void jpeg_on_message(j_common_ptr cinfo, int level) {
  // libjpeg pads a truncated stream with a fake end marker and only warns; Pillow refuses truncated
  // files, and so do we. Other warnings (e.g. stray bytes before a marker) are decoded through, as
  // Pillow does.
  if (level == -1 && cinfo->err->msg_code == JWRN_JPEG_EOF) jpeg_on_error(cinfo);
}

struct JpegSession {
  jpeg_decompress_struct cinfo{};
  JpegErrorManager errors{};
  bool created = false;
  ~JpegSession() {
    if (created) jpeg_destroy_decompress(&cinfo);
  }
};

template <typename Step>
bool jpeg_guarded(JpegSession& session, Step&& step) {
  if (setjmp(session.errors.jump)) return false;
  step();
  return true;
}

// Pillow reads 4-component JPEGs as Adobe-style inverted CMYK ("CMYK;I") and converts to RGB with
// r = (255 - k) - (c * (255 - k)) / 255 in its rounded integer form. libjpeg hands us the stored
// (inverted) values, so c = 255 - stored_c and 255 - k = stored_k.
void cmyk_row_to_rgb(const uint8_t* stored, int width, uint8_t* rgb) {
  auto mul_div_255 = [](int a, int b) {
    const int t = a * b + 128;
    return ((t >> 8) + t) >> 8;
  };
  for (int x = 0; x < width; ++x, stored += 4, rgb += 3) {
    const int not_k = stored[3];
    for (int c = 0; c < 3; ++c) rgb[c] = uint8_t(not_k - mul_div_255(255 - stored[c], not_k));
  }
}

Image decode_jpeg(std::span<const uint8_t> bytes, const DecodeOptions& options, std::string_view source) {
  JpegSession session;
  session.cinfo.err = jpeg_std_error(&session.errors.base);
  session.errors.base.error_exit = jpeg_on_error;
  session.errors.base.emit_message = jpeg_on_message;
  auto failure = [&] { fail(source, std::string("invalid JPEG: ") + session.errors.message); };
  jpeg_decompress_struct* cinfo = &session.cinfo;

  const bool header_ok = jpeg_guarded(session, [&] {
    jpeg_create_decompress(cinfo);
    session.created = true;
    jpeg_mem_src(cinfo, bytes.data(), static_cast<unsigned long>(bytes.size()));
    if (options.apply_exif_orientation) jpeg_save_markers(cinfo, JPEG_APP0 + 1, 0xFFFF);
    jpeg_read_header(cinfo, TRUE);
  });
  if (!header_ok) failure();
  check_dimensions(cinfo->image_width, cinfo->image_height, options, source);
  check_plausible_size(int64_t(cinfo->image_width) * cinfo->image_height, int64_t(bytes.size()), kMaxPixelsPerByte,
                       "pixels", source);

  // Pillow's modes by component count: 1 -> L (grey, expanded to RGB by libjpeg exactly as
  // convert('RGB') would), 3 -> RGB, 4 -> CMYK (converted below).
  const int components = cinfo->num_components;
  if (components != 1 && components != 3 && components != 4)
    fail(source, "unsupported JPEG with " + std::to_string(components) + " colour components");
  const bool is_cmyk = components == 4;
  cinfo->out_color_space = is_cmyk ? JCS_CMYK : JCS_RGB;
  cinfo->dct_method = JDCT_ISLOW;
  cinfo->do_fancy_upsampling = TRUE;

  Image image = allocate_image(int(cinfo->image_width), int(cinfo->image_height));
  std::vector<uint8_t> cmyk_row(is_cmyk ? size_t(image.width) * 4 : 0);
  uint8_t* pixels = image.rgb.data();
  uint8_t* cmyk = cmyk_row.data();
  const size_t row_bytes = size_t(image.width) * kChannels;
  const bool pixels_ok = jpeg_guarded(session, [&] {
    jpeg_start_decompress(cinfo);
    while (cinfo->output_scanline < cinfo->output_height) {
      uint8_t* rgb_row = pixels + size_t(cinfo->output_scanline) * row_bytes;
      JSAMPROW target = is_cmyk ? cmyk : rgb_row;
      jpeg_read_scanlines(cinfo, &target, 1);
      if (is_cmyk) cmyk_row_to_rgb(cmyk, int(cinfo->output_width), rgb_row);
    }
    // No jpeg_finish_decompress: every pixel is in, and a missing end marker is not worth refusing.
  });
  if (!pixels_ok) failure();

  if (options.apply_exif_orientation) {
    for (jpeg_saved_marker_ptr marker = cinfo->marker_list; marker; marker = marker->next) {
      const std::span<const uint8_t> payload(marker->data, marker->data_length);
      if (marker->marker == JPEG_APP0 + 1 && starts_with(payload, std::string_view("Exif\0\0", 6)))
        return apply_orientation(image, exif_orientation(payload.subspan(6)));
    }
  }
  return image;
}

// ---------------------------------------------------------------------------------------------------
// PNG (libpng), with the same setjmp discipline as JPEG: libpng longjmps to png_jmpbuf on error.

struct PngSession {
  png_structp png = nullptr;
  png_infop info = nullptr;
  std::span<const uint8_t> bytes;
  size_t position = 0;
  char message[256] = {};
  ~PngSession() { png_destroy_read_struct(&png, info ? &info : nullptr, nullptr); }
};

void png_on_error(png_structp png, png_const_charp message) {
  auto* session = static_cast<PngSession*>(png_get_error_ptr(png));
  std::snprintf(session->message, sizeof session->message, "%s", message);
  png_longjmp(png, 1);
}

// Warnings concern ancillary chunks (bad CRC in a text chunk, unknown profile...); the pixels are fine.
void png_on_warning(png_structp, png_const_charp) {}

void png_read_from_span(png_structp png, png_bytep out, size_t count) {
  auto* session = static_cast<PngSession*>(png_get_io_ptr(png));
  if (count > session->bytes.size() - session->position) png_error(png, "unexpected end of data (truncated file)");
  std::memcpy(out, session->bytes.data() + session->position, count);
  session->position += count;
}

template <typename Step>
bool png_guarded(PngSession& session, Step&& step) {
  if (setjmp(png_jmpbuf(session.png))) return false;
  step();
  return true;
}

Image decode_png(std::span<const uint8_t> bytes, const DecodeOptions& options, std::string_view source) {
  PngSession session;
  session.bytes = bytes;
  session.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &session, png_on_error, png_on_warning);
  if (session.png) session.info = png_create_info_struct(session.png);
  if (!session.png || !session.info) fail(source, "cannot initialise libpng");
  auto failure = [&] { fail(source, std::string("invalid PNG: ") + session.message); };
  png_structp png = session.png;
  png_infop info = session.info;

  png_uint_32 width = 0, height = 0;
  int bit_depth = 0, color_type = 0, stored_channels = 0;
  if (!png_guarded(session, [&] {
        png_set_read_fn(png, &session, png_read_from_span);
        png_read_info(png, info);
        png_get_IHDR(png, info, &width, &height, &bit_depth, &color_type, nullptr, nullptr, nullptr);
        stored_channels = png_get_channels(png, info);  // as stored, before the expansions below
      }))
    failure();
  check_dimensions(width, height, options, source);
  // The deflate stream inflates to at least the stored samples.
  check_plausible_size((int64_t(width) * stored_channels * bit_depth + 7) / 8 * height, int64_t(bytes.size()),
                       kDeflateMaxRatio, "bytes of samples", source);

  // Match Pillow's convert('RGB'): palettes and low-bit grey are expanded (grey scaled to 0..255);
  // tRNS and alpha are ignored (the alpha channel, if any, is dropped below, never composited).
  // 16-bit samples keep their high byte, except 16-bit grey without alpha: Pillow opens that as an
  // integer image ("I;16") whose conversion to RGB clamps the value to 255 instead, so it stays
  // 16-bit here and is clamped below.
  const bool grey16 = bit_depth == 16 && color_type == PNG_COLOR_TYPE_GRAY;
  size_t row_bytes = 0;
  int channels = 0;
  if (!png_guarded(session, [&] {
        if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
        if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
        if (bit_depth == 16 && !grey16) png_set_strip_16(png);
        png_set_interlace_handling(png);
        png_read_update_info(png, info);
        row_bytes = png_get_rowbytes(png, info);
        channels = png_get_channels(png, info);
      }))
    failure();
  const int bytes_per_sample = grey16 ? 2 : 1;
  if (channels < 1 || channels > 4 || row_bytes != size_t(width) * channels * bytes_per_sample)
    fail(source, "unexpected PNG layout after expansion (" + std::to_string(channels) + " channels)");

  std::vector<uint8_t> decoded(row_bytes * height);
  std::vector<png_bytep> rows(height);
  for (png_uint_32 y = 0; y < height; ++y) rows[y] = decoded.data() + y * row_bytes;
  png_bytepp row_pointers = rows.data();
  if (!png_guarded(session, [&] { png_read_image(png, row_pointers); })) failure();

  Image image = allocate_image(int(width), int(height));
  const size_t pixels = size_t(width) * height;
  uint8_t* out = image.rgb.data();
  if (grey16) {
    for (size_t i = 0; i < pixels; ++i) {
      const int value = decoded[2 * i] << 8 | decoded[2 * i + 1];  // PNG samples are big-endian
      out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = uint8_t(value > 255 ? 255 : value);
    }
  } else if (channels <= 2) {  // grey, grey + alpha
    for (size_t i = 0; i < pixels; ++i) out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = decoded[i * channels];
  } else {  // RGB, RGBA
    for (size_t i = 0; i < pixels; ++i) std::memcpy(out + 3 * i, &decoded[i * channels], 3);
  }
  return image;
}

// ---------------------------------------------------------------------------------------------------
// WebP (libwebp): RGB output drops alpha, as convert('RGB') does.

Image decode_webp(std::span<const uint8_t> bytes, const DecodeOptions& options, std::string_view source) {
  WebPBitstreamFeatures features;
  const VP8StatusCode status = WebPGetFeatures(bytes.data(), bytes.size(), &features);
  if (status != VP8_STATUS_OK) fail(source, "invalid WebP header (libwebp status " + std::to_string(status) + ")");
  if (features.has_animation) fail(source, "animated WebP is not supported");
  check_dimensions(features.width, features.height, options, source);
  check_plausible_size(int64_t(features.width) * features.height, int64_t(bytes.size()), kMaxPixelsPerByte, "pixels",
                       source);
  Image image = allocate_image(features.width, features.height);
  if (!WebPDecodeRGBInto(bytes.data(), bytes.size(), image.rgb.data(), image.rgb.size(), image.width * kChannels))
    fail(source, "corrupt or truncated WebP data");
  return image;
}

}  // namespace

Image decode_image_memory(std::span<const uint8_t> bytes, const DecodeOptions& options,
                          std::string_view source_name) {
  if (bytes.empty()) fail(source_name, "empty file");
  if (starts_with(bytes, "\xFF\xD8\xFF")) return decode_jpeg(bytes, options, source_name);
  if (starts_with(bytes, "\x89PNG\r\n\x1A\n")) return decode_png(bytes, options, source_name);
  if (starts_with(bytes, "RIFF") && starts_with(bytes, "WEBP", 8)) return decode_webp(bytes, options, source_name);
  if (starts_with(bytes, "GIF8")) fail(source_name, "GIF images are not supported (use PNG, JPEG or WebP)");
  if (starts_with(bytes, "BM")) fail(source_name, "BMP images are not supported (use PNG, JPEG or WebP)");
  fail(source_name, "unrecognised image format (expected JPEG, PNG or WebP)");
}

Image decode_image_file(const std::filesystem::path& path, const DecodeOptions& options) {
  const std::string name = path.string();
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error))
    fail(name, error ? "cannot open: " + error.message() : "not a regular file (missing or a directory)");
  std::ifstream file(path, std::ios::binary | std::ios::ate);
  if (!file) fail(name, "cannot open for reading: " + std::string(std::strerror(errno)));
  std::vector<uint8_t> bytes(size_t(file.tellg()));
  file.seekg(0);
  if (!file.read(reinterpret_cast<char*>(bytes.data()), std::streamsize(bytes.size())))
    fail(name, "read error");
  return decode_image_memory(bytes, options, name);
}

}  // namespace fastvlm
