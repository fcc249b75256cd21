// fastvlm quantize -m IN_DIR -o OUT_DIR --type q8|q4: a copy of a model directory with the LLM linears
// block-quantised (see src/models/quantize.h for what is written).
#include <cstdio>
#include <memory>
#include <string>

#include "commands.h"
#include "models/quantize.h"

namespace fastvlm::cli {

void add_quantize_command(CLI::App& app) {
  auto* command = app.add_subcommand(
      "quantize", "Write a copy of a model directory with the LLM linears (lm_head included) quantised to "
                  "8-bit (q8) or 4-bit (q4) blocks of 32 weights with a half-precision scale each");
  auto input = std::make_shared<std::string>();
  auto output = std::make_shared<std::string>();
  auto type = std::make_shared<std::string>();
  command->add_option("-m,--model", *input, "Input model directory")->required()->check(CLI::ExistingDirectory);
  command->add_option("-o,--output", *output, "Output directory (new or empty)")->required();
  command->add_option("--type", *type, "q8 (Q8_0) or q4 (Q4_0)")->required()->check(CLI::IsMember({"q8", "q4"}));
  command->callback([=] {
    const WeightType quant_type = *type == "q8" ? WeightType::Q8_0 : WeightType::Q4_0;
    const QuantizeSummary summary = quantize_model(*input, *output, quant_type);
    std::printf("quantised %d LLM linears to %s: %.1f MB -> %.1f MB; wrote %s\n", summary.linears,
                std::string(weight_type_name(quant_type)).c_str(), summary.bytes_before / 1e6,
                summary.bytes_after / 1e6, output->c_str());
  });
}

}  // namespace fastvlm::cli
