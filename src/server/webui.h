#pragma once
// The web UI of `fastvlm serve` (the page sources in web/, compiled into the binary by web/embed.cmake):
// a chat with images and a live camera mode, talking to the server only through the public /v1 API.
#include <span>
#include <string_view>

namespace httplib {
class Server;
}

namespace fastvlm::server {

struct WebFile {
  std::string_view path;  // "/index.html"
  std::string_view content_type;
  std::string_view body;
};

// Every page file, generated at build time.
std::span<const WebFile> web_files();

// GET / (index.html) and GET /<file> for each page file. Served without authentication: the page holds
// nothing secret and asks the user for the API key itself.
void install_webui(httplib::Server& http);

}  // namespace fastvlm::server
