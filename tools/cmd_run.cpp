// fastvlm run: one question (optionally about an image), the answer streamed to stdout.
#include <cstdio>

#include "commands.h"
#include "common.h"

namespace fastvlm::cli {

void add_run_command(CLI::App& app) {
  struct Flags {
    ModelFlags model;
    GenerateOptions generate;
    std::string image, prompt, system;
    bool json = false, raw = false;
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
  command->callback([flags] {
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
      std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    } else {
      std::printf("\n");
    }
  });
}

}  // namespace fastvlm::cli
