// The command-line parser.
#include "args.hpp"

#include <attune/error.hpp>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <cstdlib>
#include <fcntl.h>
#include <filesystem>
#include <unistd.h>

namespace attune::cli {

Args::Args(const std::vector<std::string>& argv, const std::set<std::string>& valued,
           const std::set<std::string>& switches) {
  for (std::size_t i = 0; i < argv.size(); ++i) {
    const std::string& arg = argv[i];
    if (arg.rfind("--", 0) != 0 || arg == "--") {
      positional_.push_back(arg);
      continue;
    }
    std::string name = arg, value;
    bool has_value = false;
    if (const auto eq = arg.find('='); eq != std::string::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      has_value = true;
    }
    if (switches.count(name)) {
      if (has_value) throw UsageError(name + " takes no value");
      values_[name] = "";
    } else if (valued.count(name)) {
      if (!has_value) {
        if (i + 1 >= argv.size()) throw UsageError(name + " needs a value");
        value = argv[++i];
      }
      if (values_.count(name)) throw UsageError(name + " given twice");
      values_[name] = value;
    } else {
      throw UsageError("unknown option '" + name + "' (see --help)");
    }
  }
}

bool Args::has(const std::string& flag) const { return values_.count(flag) != 0; }

std::optional<std::string> Args::get(const std::string& flag) const {
  const auto it = values_.find(flag);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

std::string Args::required(const std::string& flag) const {
  const auto v = get(flag);
  if (!v) throw UsageError("missing required option " + flag);
  if (v->empty()) throw UsageError(flag + " needs a non-empty value");
  return *v;
}

std::optional<std::int64_t> Args::get_int(const std::string& flag, std::int64_t min) const {
  const auto v = get(flag);
  if (!v) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  const long long n = std::strtoll(v->c_str(), &end, 10);
  if (v->empty() || *end != '\0' || errno == ERANGE) {
    throw UsageError(flag + " = '" + *v + "' is not an integer");
  }
  if (n < min) throw UsageError(flag + " = " + *v + " must be >= " + std::to_string(min));
  return n;
}

std::optional<float> Args::get_float(const std::string& flag) const {
  const auto v = get(flag);
  if (!v) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  const float x = std::strtof(v->c_str(), &end);
  if (v->empty() || *end != '\0' || errno == ERANGE || !std::isfinite(x)) {
    throw UsageError(flag + " = '" + *v + "' is not a finite number");
  }
  return x;
}

std::optional<Dtype> Args::get_dtype(const std::string& flag, bool kv) const {
  const auto v = get(flag);
  if (!v) return std::nullopt;
  if (const auto dtype = parse_dtype(*v); dtype && (kv || !is_quantized(*dtype))) return dtype;
  throw UsageError(flag + " = '" + *v + "': expected fp32, bf16 or fp16" +
                   (kv ? ", or a quantized K/V type: int8, int8_kc, fp8_e4m3, fp8_e5m2, int4" : ""));
}

void check_output_dir(const std::string& path) {
  // error_code overloads: a name the OS refuses (too long, say) is a bad path, not an exception
  // from deep inside std::filesystem (found by fuzz_args).
  std::error_code ec;
  const auto dir = std::filesystem::path(path).parent_path();
  if (!dir.empty() && !std::filesystem::is_directory(dir, ec)) {
    throw IoError("cannot write '" + path + "': directory '" + dir.string() + "' " +
                  (ec ? ec.message() : std::string("does not exist")));
  }
  const bool is_dir = std::filesystem::is_directory(path, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) throw IoError("cannot write '" + path + "': " + ec.message());
  if (is_dir) throw IoError("cannot write '" + path + "': it is a directory");
  // Existing is not enough (read-only mounts, /proc, permissions): create and remove a probe
  // file, so a long run never ends by failing to write its result.
  const std::string probe = (dir.empty() ? std::filesystem::path(".") : dir).string() + "/.attune-probe-" +
                            std::to_string(static_cast<long>(getpid()));
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd < 0) {
    if (errno == EEXIST) return;
    throw IoError("cannot write '" + path + "': directory '" + (dir.empty() ? std::string(".") : dir.string()) +
                  "' is not writable (" + std::strerror(errno) + ")");
  }
  ::close(fd);
  ::unlink(probe.c_str());
}

}  // namespace attune::cli
