// libFuzzer target: image decoding (JPEG, PNG, WebP, sniffed from the bytes) and both preprocessing paths
// (FastVLM's pad-to-square + bicubic resize, the CLIP shortest edge + center crop). Anything malformed must
// be a fastvlm::Error, and no claimed size may cost memory the data cannot back (libFuzzer's -rss_limit_mb
// and -malloc_limit_mb catch that).
#include "core/error.h"
#include "fuzz_files.h"
#include "image/decode.h"
#include "image/preprocess.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fastvlm;
  DecodeOptions options;
  options.apply_exif_orientation = size % 2 == 1;  // both settings, without spending an input byte on it
  try {
    const Image image = decode_image_memory({data, size}, options, "fuzz");
    preprocess_image(image, 48);
    ImageProcessorConfig clip;
    clip.mode = ImageProcessorConfig::Mode::ResizeShortestEdgeCenterCrop;
    clip.size = 40;
    clip.crop_height = 32;
    clip.crop_width = 36;
    clip.do_normalize = true;
    preprocess_image(image, clip);
  } catch (const Error&) {
  }
  return 0;
}
