#include "models/precision_choice.h"

#include "core/error.h"
#include "kernels/capabilities.h"

namespace fastvlm {

const char* precision_name(Precision precision) {
  switch (precision) {
    case Precision::Auto: return "auto";
    case Precision::F32: return "f32";
    case Precision::Bf16: return "bf16";
    case Precision::Int8: return "int8";
  }
  return "?";
}

Precision parse_precision(std::string_view name) {
  for (Precision precision : {Precision::Auto, Precision::F32, Precision::Bf16, Precision::Int8})
    if (name == precision_name(precision)) return precision;
  throw Error("dtype must be auto, f32, bf16 or int8, got \"" + std::string(name) + "\"");
}

ModelLoadOptions resolve_precision(Precision requested) {
  ModelLoadOptions options;
  if (requested != Precision::Auto) {
    options.precision = requested;
  } else if (kernels::vision_int8_available() && kernels::quant_int8_gemm_available()) {
    options.precision = Precision::Int8;
    options.quantize_llm = WeightType::Q8_0;
  } else {
    options.precision = Precision::F32;
  }
  return options;
}

std::string describe_precision(Precision requested, const ModelLoadOptions& resolved, bool has_vision,
                               const std::string& stored_quantization) {
  std::string llm;
  if (!stored_quantization.empty()) {
    llm = stored_quantization + " (as stored)";
  } else if (resolved.quantize_llm) {
    llm = std::string(weight_type_name(*resolved.quantize_llm)) + " (quantised at load)";
  } else {
    // Int8 is bf16 outside the vision tower.
    llm = resolved.precision == Precision::F32 ? "f32" : "bf16";
  }
  std::string text = precision_name(requested);
  text += " -> ";
  if (has_vision) text += std::string("vision ") + precision_name(resolved.precision) + ", ";
  return text + "llm " + llm;
}

}  // namespace fastvlm
