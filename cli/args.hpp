// A small, strict command-line parser: --flag value, --flag=value, boolean --flag.
#pragma once

#include <attune/dtype.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace attune::cli {

// Bad usage of the command line: exit code 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Args {
 public:
  // `valued` flags take a value, `switches` do not; anything else is a UsageError.
  Args(const std::vector<std::string>& argv, const std::set<std::string>& valued,
       const std::set<std::string>& switches);

  bool has(const std::string& flag) const;
  std::optional<std::string> get(const std::string& flag) const;
  std::string required(const std::string& flag) const;
  // Parsed numbers; UsageError names the flag and the bad text.
  std::optional<std::int64_t> get_int(const std::string& flag, std::int64_t min) const;
  std::optional<float> get_float(const std::string& flag) const;
  // A storage type named as attune names them (fp32, bf16, fp16).
  // A storage type; kv: the quantized K/V types are accepted too (--kv-dtype).
  std::optional<Dtype> get_dtype(const std::string& flag, bool kv = false) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
};

// Throws attune::IoError unless `path` can be created or replaced: its directory exists and it
// is not itself a directory. Checked before any work, so a bad path fails fast.
void check_output_dir(const std::string& path);

}  // namespace attune::cli
