// The web console's files (runtime/ui/), embedded in the binary at build
// time by cmake/embed_assets.cmake: a node serves them without reading the
// file system and without fetching anything (nodes often run air-gapped).
#pragma once

#include <span>
#include <string_view>

namespace dcbd::http {

struct ui_asset {
  /// The file's path under runtime/ui/ ("index.html", "app.js").
  std::string_view name;
  std::string_view content_type;
  /// A strong ETag (quoted): a hash of the bytes.
  std::string_view etag;
  std::string_view bytes;
};

/// Every file of the console.
std::span<const ui_asset> ui_assets();

} // namespace dcbd::http
