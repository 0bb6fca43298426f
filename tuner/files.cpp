// The tuner's file I/O. A header or log is replaced by a rename, so a reader (or a build) never
// sees a half-written file; log lines are appended and flushed one by one, so an interrupted
// run loses at most the line being written.
#include "files.hpp"

#include <attune/error.hpp>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unistd.h>

namespace attune::tuner {

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError("cannot read '" + path + "': " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw IoError("cannot read '" + path + "'");
  return ss.str();
}

void write_atomic(const std::string& path, const std::string& text) {
  const std::filesystem::path target(path);
  const auto dir = target.parent_path();
  if (!dir.empty() && !std::filesystem::is_directory(dir))
    throw IoError("cannot write '" + path + "': directory '" + dir.string() + "' does not exist");
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw IoError("cannot write '" + tmp + "': " + std::strerror(errno));
    out << text;
    out.flush();
    if (!out) {
      std::remove(tmp.c_str());
      throw IoError("cannot write '" + tmp + "'");
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, target, ec);
  if (ec) {
    std::remove(tmp.c_str());
    throw IoError("cannot rename '" + tmp + "' to '" + path + "': " + ec.message());
  }
}

void append_text(const std::string& path, const std::string& text) {
  std::FILE* f = std::fopen(path.c_str(), "ab");
  if (f == nullptr) throw IoError("cannot append to '" + path + "': " + std::strerror(errno));
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size() && std::fflush(f) == 0;
  if (std::fclose(f) != 0 || !ok) throw IoError("cannot append to '" + path + "'");
}

}  // namespace attune::tuner
