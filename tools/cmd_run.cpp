// fastvlm run: one question (optionally about an image), the answer streamed to stdout.
#include <cstdio>
#include <fstream>
#include <sstream>

#include "commands.h"
#include "common.h"

namespace fastvlm::cli {

void add_run_command(CLI::App& app) {
  struct Flags {
    ModelFlags model;
    GenerateOptions generate;
    std::string image, prompt, system, json_schema_file;
    bool json = false, raw = false, json_object = false;
    int logprobs = -1;
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* command = app.add_subcommand("run", "Answer a prompt, optionally about an image");
  flags->model.add_to(*command);
  add_generate_flags(*command, flags->generate);
  command->add_option("--image", flags->image, "Image file (JPEG, PNG, WebP)");
  command->add_option("-p,--prompt", flags->prompt, "The question")->required();
  command->add_option("--system", flags->system, "System prompt");
  command->add_flag("--raw", flags->raw,
                    "Send the prompt as it is, without the chat template (an image goes where it says <image>)")
      ->excludes("--system");
  command->add_flag("--json", flags->json, "Print one JSON object with the answer, token ids and timings");
  command->add_option("--json-schema", flags->json_schema_file,
                      "Answer with JSON matching the JSON Schema in this file (compact, properties in schema order)");
  command->add_flag("--json-object", flags->json_object, "Answer with a JSON object")->excludes("--json-schema");
  command->add_option("--logprobs", flags->logprobs,
                      "With --json: each token's log-probability and this many alternatives (0-20)")
      ->check(CLI::Range(0, 20))
      ->needs("--json");
  command->callback([flags] {
    if (!flags->json_schema_file.empty()) {
      std::ifstream file(flags->json_schema_file, std::ios::binary);
      if (!file) throw Error("cannot read the JSON schema file " + flags->json_schema_file);
      std::ostringstream text;
      text << file.rdbuf();
      flags->generate.json_schema = text.str();
    } else if (flags->json_object) {
      flags->generate.json_schema = R"({"type":"object"})";
    }
    flags->generate.logprobs = flags->logprobs;
    auto engine = flags->model.load();
    Session session(*engine);
    if (!flags->system.empty()) session.set_system_prompt(flags->system);
    ImageInput image = ImageInput::file(flags->image);
    TextCallback stream;
    if (!flags->json)
      stream = [](std::string_view piece) {
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
        return true;
      };
    const ImageInput* image_input = flags->image.empty() ? nullptr : &image;
    Generation answer = flags->raw ? session.complete(flags->prompt, flags->generate, stream, image_input)
                                   : session.ask(flags->prompt, image_input, flags->generate, stream);
    if (flags->json) {
      nlohmann::json out = {{"text", answer.text},
                            {"token_ids", answer.token_ids},
                            {"prompt_tokens", answer.prompt_tokens},
                            {"prompt_ids", answer.prompt_ids},
                            {"timings", timings_json(answer.timings)}};
      if (flags->logprobs >= 0) {
        nlohmann::json logprobs = nlohmann::json::array();
        for (const TokenLogprob& token : answer.logprobs) {
          nlohmann::json top = nlohmann::json::array();
          for (const auto& [id, logprob] : token.top) top.push_back({{"id", id}, {"logprob", logprob}});
          logprobs.push_back({{"id", token.id}, {"logprob", token.logprob}, {"top_logprobs", top}});
        }
        out["logprobs"] = logprobs;
      }
      std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    } else {
      std::printf("\n");
    }
  });
}

}  // namespace fastvlm::cli
