// fastvlm chat: a multi-turn conversation on stdin/stdout. The KV cache is kept across turns, so each
// question prefills only itself. Works the same from a terminal or a pipe.
#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "commands.h"
#include "common.h"

namespace fastvlm::cli {

namespace {

void print(std::string_view text) {
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);
}

}  // namespace

void add_chat_command(CLI::App& app) {
  struct Flags {
    ModelFlags model;
    GenerateOptions generate;
    std::string image, system;
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* command = app.add_subcommand(
      "chat", "Interactive chat. Commands: /image PATH (attach to the next turn), /reset, /quit");
  flags->model.add_to(*command);
  add_generate_flags(*command, flags->generate);
  command->add_option("--image", flags->image, "Image attached to the first turn");
  command->add_option("--system", flags->system, "System prompt");
  command->callback([flags] {
    auto engine = flags->model.load();
    Session session(*engine);
    if (!flags->system.empty()) session.set_system_prompt(flags->system);
    const bool interactive = isatty(STDIN_FILENO);
    std::string pending_image = flags->image;
    std::string line;
    while (true) {
      if (interactive) print("> ");
      if (!std::getline(std::cin, line)) break;
      if (line.empty()) continue;
      if (line == "/quit" || line == "/exit") break;
      if (line == "/reset") {
        session.reset();
        pending_image.clear();
        print("(conversation cleared)\n");
        continue;
      }
      if (line.rfind("/image ", 0) == 0) {
        pending_image = line.substr(7);
        print("(image attached to the next question: " + pending_image + ")\n");
        continue;
      }
      ImageInput image = ImageInput::file(pending_image);
      try {
        session.ask(line, pending_image.empty() ? nullptr : &image, flags->generate, [](std::string_view piece) {
          print(piece);
          return true;
        });
        print("\n");
      } catch (const std::exception& e) {
        // A bad image or an over-long turn ends that turn, not the conversation.
        std::fprintf(stderr, "fastvlm: error: %s\n", e.what());
      }
      pending_image.clear();
    }
  });
}

}  // namespace fastvlm::cli
