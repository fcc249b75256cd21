#include "server/webui.h"

#include <httplib.h>

namespace fastvlm::server {
namespace {

// The page loads only its own files and talks only to its own origin, so an answer that slipped
// markup past the Markdown renderer still could not run a script or send data elsewhere. Images are
// data: URLs (uploads, camera frames); the camera preview is a MediaStream.
constexpr const char* kContentSecurityPolicy =
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob: mediastream:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

void serve(const WebFile& file, httplib::Response& res) {
  res.set_header("Content-Security-Policy", kContentSecurityPolicy);
  res.set_header("X-Content-Type-Options", "nosniff");
  // The files change with the binary: let browsers revalidate rather than keep a stale page.
  res.set_header("Cache-Control", "no-cache");
  res.set_content(file.body.data(), file.body.size(), std::string(file.content_type));
}

}  // namespace

void install_webui(httplib::Server& http) {
  for (const WebFile& file : web_files()) {
    // httplib's route patterns are regular expressions: a '.' in a file name must match only itself.
    std::string pattern;
    for (char c : file.path) pattern += c == '.' ? std::string("\\.") : std::string(1, c);
    http.Get(pattern, [&file](const httplib::Request&, httplib::Response& res) { serve(file, res); });
    if (file.path == "/index.html")
      http.Get("/", [&file](const httplib::Request&, httplib::Response& res) { serve(file, res); });
  }
}

}  // namespace fastvlm::server
