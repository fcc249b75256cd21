// The web UI's page files are compiled into the server byte for byte (web/embed.cmake); the browser
// test (tests/webui) checks what they do.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "server/webui.h"

namespace fastvlm::server {
namespace {

namespace fs = std::filesystem;

TEST(WebUi, EveryPageFileIsEmbeddedExactly) {
  std::set<std::string> on_disk;
  for (const auto& entry : fs::directory_iterator(fs::path(FASTVLM_SOURCE_DIR) / "web")) {
    const std::string extension = entry.path().extension().string();
    if (extension == ".html" || extension == ".js" || extension == ".css")
      on_disk.insert(std::string("/").append(entry.path().filename().string()));
  }
  std::set<std::string> embedded;
  for (const WebFile& file : web_files()) {
    embedded.insert(std::string(file.path));
    std::ifstream in(fs::path(FASTVLM_SOURCE_DIR) / "web" / file.path.substr(1), std::ios::binary);
    const std::string source((std::istreambuf_iterator<char>(in)), {});
    EXPECT_EQ(file.body, source) << file.path;
  }
  EXPECT_EQ(embedded, on_disk);
  EXPECT_TRUE(embedded.count("/index.html"));
}

TEST(WebUi, ContentTypesFollowTheExtension) {
  for (const WebFile& file : web_files()) {
    const std::string_view path = file.path;
    const std::string_view expected = path.ends_with(".html") ? "text/html; charset=utf-8"
                                      : path.ends_with(".js") ? "text/javascript; charset=utf-8"
                                                              : "text/css; charset=utf-8";
    EXPECT_EQ(file.content_type, expected) << path;
  }
}

}  // namespace
}  // namespace fastvlm::server
