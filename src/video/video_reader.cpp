#include "video/video_reader.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libswscale/swscale.h>
}

#include <algorithm>

#include "core/error.h"

namespace fastvlm::video {
namespace {

std::string av_error_text(int code) {
  char text[AV_ERROR_MAX_STRING_SIZE] = {};
  av_strerror(code, text, sizeof text);
  return text;
}

struct FormatCloser {
  void operator()(AVFormatContext* c) const { avformat_close_input(&c); }
};
struct CodecFreer {
  void operator()(AVCodecContext* c) const { avcodec_free_context(&c); }
};
struct FrameFreer {
  void operator()(AVFrame* f) const { av_frame_free(&f); }
};
struct PacketFreer {
  void operator()(AVPacket* p) const { av_packet_free(&p); }
};
struct ScaleFreer {
  void operator()(SwsContext* s) const { sws_freeContext(s); }
};

}  // namespace

struct VideoReader::Impl {
  std::string name;  // for messages: the path, or "stdin"
  std::unique_ptr<AVFormatContext, FormatCloser> format;
  std::unique_ptr<AVCodecContext, CodecFreer> codec;
  std::unique_ptr<AVFrame, FrameFreer> frame{av_frame_alloc()};
  std::unique_ptr<AVPacket, PacketFreer> packet{av_packet_alloc()};
  mutable std::unique_ptr<SwsContext, ScaleFreer> to_rgb, to_thumbnail;
  int stream_index = -1;
  AVRational time_base{};
  double frame_seconds = 0;  // one frame at the average rate (0 when the stream does not say)
  int64_t start_pts = AV_NOPTS_VALUE;
  double current = 0, end = 0;
  bool draining = false;

  [[noreturn]] void fail(const std::string& what, int code) const {
    throw Error(name + ": " + what + (code ? " (" + av_error_text(code) + ")" : ""));
  }

  // Scales the current frame into `data`/`linesize` as `format` at width x height.
  void scale(std::unique_ptr<SwsContext, ScaleFreer>& context, AVPixelFormat format, int width, int height, int flags,
             uint8_t* data, int linesize) const {
    context.reset(sws_getCachedContext(context.release(), frame->width, frame->height, AVPixelFormat(frame->format),
                                       width, height, format, flags, nullptr, nullptr, nullptr));
    if (!context) fail("cannot convert frames of this pixel format", 0);
    uint8_t* planes[4] = {data, nullptr, nullptr, nullptr};
    int linesizes[4] = {linesize, 0, 0, 0};
    sws_scale(context.get(), frame->data, frame->linesize, 0, frame->height, planes, linesizes);
  }
};

VideoReader::VideoReader(const std::string& path) : impl_(std::make_unique<Impl>()) {
  Impl& r = *impl_;
  r.name = path == "-" ? "stdin" : path;
  av_log_set_level(AV_LOG_QUIET);  // failures become our one-line errors instead of FFmpeg's log
  // "file:" keeps a path that looks like another protocol ("http:...", "concat:...") a local file.
  const std::string url = path == "-" ? "pipe:0" : "file:" + path;
  // A file must be whole: damaged data is an error, not frames quietly skipped or smeared. A live
  // stream on stdin is taken as it comes, since its newest frames matter more than a lost packet.
  const bool strict = path != "-";
  AVFormatContext* format = avformat_alloc_context();
  if (!format) r.fail("out of memory", 0);
  if (strict) format->error_recognition |= AV_EF_EXPLODE;
  if (const int code = avformat_open_input(&format, url.c_str(), nullptr, nullptr); code < 0)
    r.fail(code == AVERROR_INVALIDDATA ? "not a video" : "cannot open", code);
  r.format.reset(format);
  if (const int code = avformat_find_stream_info(format, nullptr); code < 0) r.fail("not a video", code);
  const AVCodec* decoder = nullptr;
  r.stream_index = av_find_best_stream(format, AVMEDIA_TYPE_VIDEO, -1, -1, &decoder, 0);
  if (r.stream_index == AVERROR_STREAM_NOT_FOUND) r.fail("has no video stream", 0);
  if (r.stream_index < 0 || !decoder) r.fail("no decoder for its video stream", r.stream_index < 0 ? r.stream_index : 0);
  const AVStream* stream = format->streams[r.stream_index];
  r.time_base = stream->time_base;
  r.start_pts = stream->start_time;
  if (stream->avg_frame_rate.num > 0 && stream->avg_frame_rate.den > 0) r.frame_seconds = av_q2d(av_inv_q(stream->avg_frame_rate));
  r.codec.reset(avcodec_alloc_context3(decoder));
  if (!r.codec) r.fail("out of memory", 0);
  if (const int code = avcodec_parameters_to_context(r.codec.get(), stream->codecpar); code < 0)
    r.fail("unsupported video stream", code);
  if (strict) r.codec->err_recognition |= AV_EF_EXPLODE;
  if (const int code = avcodec_open2(r.codec.get(), decoder, nullptr); code < 0)
    r.fail("cannot open the video decoder", code);
}

VideoReader::~VideoReader() = default;

bool VideoReader::next() {
  Impl& r = *impl_;
  for (;;) {
    const int received = avcodec_receive_frame(r.codec.get(), r.frame.get());
    if (received == 0) {
      if (r.frame->flags & AV_FRAME_FLAG_CORRUPT) r.fail("corrupt video data", 0);
      int64_t pts = r.frame->best_effort_timestamp;
      if (pts == AV_NOPTS_VALUE) pts = r.frame->pts;
      if (r.start_pts == AV_NOPTS_VALUE) r.start_pts = pts;
      r.current = pts == AV_NOPTS_VALUE ? r.end : double(pts - r.start_pts) * av_q2d(r.time_base);
      r.end = std::max(r.end, r.current + r.frame_seconds);
      return true;
    }
    if (received == AVERROR_EOF) return false;
    if (received != AVERROR(EAGAIN)) r.fail("corrupt video data", received);
    if (r.draining) return false;
    // The decoder wants input: the next packet of our stream, or the end of the file to drain it.
    const int read = av_read_frame(r.format.get(), r.packet.get());
    if (read == AVERROR_EOF) {
      r.draining = true;
      avcodec_send_packet(r.codec.get(), nullptr);
      continue;
    }
    if (read < 0) r.fail("cannot read the video", read);
    if (r.packet->stream_index == r.stream_index) {
      const int sent = avcodec_send_packet(r.codec.get(), r.packet.get());
      if (sent < 0) r.fail("corrupt video data", sent);
    }
    av_packet_unref(r.packet.get());
  }
}

double VideoReader::seconds() const { return impl_->current; }

double VideoReader::end_seconds() const { return impl_->end; }

RgbImage VideoReader::rgb() const {
  const Impl& r = *impl_;
  RgbImage image{r.frame->width, r.frame->height, std::vector<uint8_t>(size_t(r.frame->width) * r.frame->height * 3)};
  r.scale(r.to_rgb, AV_PIX_FMT_RGB24, image.width, image.height, SWS_BICUBIC, image.pixels.data(), image.width * 3);
  return image;
}

std::vector<uint8_t> VideoReader::thumbnail() const {
  const Impl& r = *impl_;
  std::vector<uint8_t> grey(kThumbnailSide * kThumbnailSide);
  r.scale(r.to_thumbnail, AV_PIX_FMT_GRAY8, kThumbnailSide, kThumbnailSide, SWS_AREA, grey.data(), kThumbnailSide);
  return grey;
}

}  // namespace fastvlm::video
