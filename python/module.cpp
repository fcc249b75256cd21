// _fastvlm: the C++ API (include/fastvlm/fastvlm.hpp) for Python. The friendly layer (images from PIL and
// numpy, streaming iterators, captioning, Dask) is plain Python in fastvlm/; this file only crosses the
// boundary: every call that computes releases the GIL, and fastvlm::Error becomes fastvlm.Error.
#include <omp.h>
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <exception>
#include <map>

#include "core/error.h"
#include "fastvlm/fastvlm.hpp"
#include "hub/hub.h"

namespace py = pybind11;
using namespace fastvlm;

namespace {

// None, a path (str) or encoded bytes: what the Python layer hands over after converting PIL/numpy images.
std::optional<ImageInput> image_input(const py::object& image) {
  if (image.is_none()) return std::nullopt;
  if (py::isinstance<py::bytes>(image)) {
    const std::string_view bytes = image.cast<std::string_view>();
    return ImageInput::memory(std::vector<uint8_t>(bytes.begin(), bytes.end()));
  }
  return ImageInput::file(image.cast<std::string>());
}

py::dict timings_dict(const Timings& t) {
  py::dict d;
  d["load_ms"] = t.load_ms;
  d["preprocess_ms"] = t.preprocess_ms;
  d["vision_ms"] = t.vision_ms;
  d["projector_ms"] = t.projector_ms;
  d["prefill_ms"] = t.prefill_ms;
  d["ttft_ms"] = t.ttft_ms;
  d["decode_ms_per_token"] = t.decode_ms_per_token;
  return d;
}

py::dict generation_dict(const Generation& g) {
  static const char* reasons[] = {"end_of_turn", "max_tokens", "stop_string", "cancelled"};
  py::dict d;
  d["text"] = py::bytes(g.text).attr("decode")("utf-8", "replace");
  d["prompt_tokens"] = g.prompt_tokens;
  d["tokens"] = g.token_ids.size();
  d["token_ids"] = g.token_ids;
  d["stop_reason"] = reasons[int(g.stop_reason)];
  d["timings"] = timings_dict(g.timings);
  return d;
}

py::array_t<float> matrix(std::vector<float>&& values, int rows) {
  const py::ssize_t cols = rows ? py::ssize_t(values.size()) / rows : 0;
  py::array_t<float> out({py::ssize_t(rows), cols});
  std::copy(values.begin(), values.end(), out.mutable_data());
  return out;
}

// Engine::load applies EngineOptions::threads to the loading thread only (OpenMP's thread count is per
// thread), while Python may compute on any thread (streams, thread pools, Dask workers): every call that
// computes applies it to its own thread first.
void use_engine_threads(const Engine& engine) {
  if (engine.options().threads > 0) omp_set_num_threads(engine.options().threads);
}

// A conversation bound to its engine: the Python object keeps the engine alive (py::keep_alive below).
struct PySession {
  explicit PySession(const Engine& engine) : engine(engine), session(engine) {}
  const Engine& engine;
  Session session;

  // One user turn. `on_text` (optional) gets each printable piece with the GIL held; returning False, or
  // raising, cancels the generation, and the exception is re-raised here once the engine has returned.
  py::dict ask(const std::string& prompt, const py::object& image, int max_tokens, float temperature, int top_k,
               float top_p, float min_p, float repeat_penalty, int repeat_last_n, uint64_t seed,
               std::vector<std::string> stop, const std::function<bool(std::string)>& on_text) {
    const std::optional<ImageInput> input = image_input(image);
    GenerateOptions options;
    options.max_tokens = max_tokens;
    options.sampling = {temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, seed};
    options.stop = std::move(stop);
    std::exception_ptr callback_error;
    TextCallback callback;
    if (on_text)
      callback = [&](std::string_view piece) {
        py::gil_scoped_acquire gil;
        try {
          return on_text(std::string(piece));
        } catch (...) {
          callback_error = std::current_exception();
          return false;
        }
      };
    Generation result;
    {
      py::gil_scoped_release release;
      use_engine_threads(engine);
      result = session.ask(prompt, input ? &*input : nullptr, options, callback);
    }
    if (callback_error) std::rethrow_exception(callback_error);
    return generation_dict(result);
  }
};

}  // namespace

PYBIND11_MODULE(_fastvlm, m) {
  m.doc() = "fastvlm.cpp's C++ engine; use the `fastvlm` package rather than this module";
  py::register_exception<Error>(m, "Error", PyExc_RuntimeError);

  py::class_<Engine>(m, "Engine")
      .def(py::init([](const std::string& model, const std::string& dtype, int threads, int context, int image_size,
                       int64_t max_image_pixels, const std::string& chat_format, bool quiet) {
             EngineOptions options;
             options.precision = parse_precision(dtype);
             options.threads = threads;
             options.context = context;
             options.image_size = image_size;
             options.max_image_pixels = max_image_pixels;
             options.chat_format = chat_format;
             py::gil_scoped_release release;
             hub::DownloadOptions download;
             download.quiet = quiet;
             return Engine::load(hub::resolve_model(model, download).string(), options);
           }),
           py::arg("model"), py::arg("dtype"), py::arg("threads"), py::arg("context"), py::arg("image_size"),
           py::arg("max_image_pixels"), py::arg("chat_format"), py::arg("quiet"))
      .def_property_readonly("info",
                             [](const Engine& e) {
                               const ModelInfo& i = e.info();
                               py::dict d;
                               d["path"] = i.path;
                               d["family"] = i.family;
                               d["chat_format"] = i.chat_format;
                               d["hidden_size"] = i.hidden_size;
                               d["num_layers"] = i.num_layers;
                               d["vocab_size"] = i.vocab_size;
                               d["image_size"] = i.image_size;
                               d["image_tokens"] = i.image_tokens;
                               d["vision_channels"] = i.vision_channels;
                               d["quantization"] = i.quantization;
                               d["load_ms"] = e.load_ms();
                               return d;
                             })
      .def(
          "embed_image",
          [](const Engine& e, const py::object& image, bool features) -> py::object {
            const std::optional<ImageInput> input = image_input(image);
            if (!input) throw Error("embed_image needs an image");
            std::vector<float> embeds, tower;
            {
              py::gil_scoped_release release;
              use_engine_threads(e);
              embeds = e.embed_image(*input, nullptr, features ? &tower : nullptr);
            }
            const int rows = e.info().image_tokens;
            py::array_t<float> out = matrix(std::move(embeds), rows);
            if (!features) return out;
            return py::make_tuple(out, matrix(std::move(tower), rows));
          },
          py::arg("image"), py::arg("features"));

  py::class_<PySession>(m, "Session")
      .def(py::init<const Engine&>(), py::arg("engine"), py::keep_alive<1, 2>())
      .def("ask", &PySession::ask, py::arg("prompt"), py::arg("image"), py::arg("max_tokens"), py::arg("temperature"),
           py::arg("top_k"), py::arg("top_p"), py::arg("min_p"), py::arg("repeat_penalty"), py::arg("repeat_last_n"),
           py::arg("seed"), py::arg("stop"), py::arg("on_text"))
      .def("reset", [](PySession& s) { s.session.reset(); })
      .def("set_system_prompt", [](PySession& s, std::string text) { s.session.set_system_prompt(std::move(text)); })
      .def_property_readonly("context_used", [](const PySession& s) { return s.session.context_used(); });
}
