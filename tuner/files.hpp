// The tuner's file I/O: whole-file reads, atomic writes and appended lines; IoError on failure.
#pragma once

#include <string>

namespace attune::tuner {

// The file's bytes.
std::string read_text(const std::string& path);
// Writes through a temporary file in the same directory and a rename.
void write_atomic(const std::string& path, const std::string& text);
// Appends and flushes one line.
void append_text(const std::string& path, const std::string& text);

}  // namespace attune::tuner
