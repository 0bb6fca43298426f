// Entry point of the `attune` command: dispatches to a subcommand and maps errors to exit
// codes (1: data or input error, 2: usage error) with a one-line "error: ..." on stderr.
#include "args.hpp"
#include "commands.hpp"

#include <attune/error.hpp>
#include <attune/version.hpp>

#include <cstdio>
#include <exception>
#include <new>
#include <string>

namespace {

void print_usage(std::FILE* out) {
  std::fprintf(out, "usage: attune <command> [options]\n\ncommands:\n");
  for (const auto& c : attune::cli::commands()) std::fprintf(out, "  %-10s %s\n", c.name, c.summary);
  std::fprintf(out, "\nRun 'attune <command> --help' for a command's options.\n");
}

// Prints "error: <what>" as exactly one line: messages can quote bytes from a malformed input
// file or a path, so control characters (a newline in a .npy header) are escaped as \xHH.
void report(const char* what) {
  std::string line = "error: ";
  for (const char* p = what; *p != '\0'; ++p) {
    const auto c = static_cast<unsigned char>(*p);
    if (c < 0x20 || c == 0x7f) {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      line += hex;
    } else {
      line += *p;
    }
  }
  line += '\n';
  std::fputs(line.c_str(), stderr);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    print_usage(stderr);
    return 2;
  }
  if (args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    print_usage(stdout);
    return 0;
  }
  if (args[0] == "--version") {
    std::printf("attune %s (%s)\n", attune::version().data(), attune::git_revision().data());
    return 0;
  }
  for (const auto& command : attune::cli::commands()) {
    if (args[0] != command.name) continue;
    const std::vector<std::string> rest(args.begin() + 1, args.end());
    for (const auto& a : rest) {
      if (a == "--help" || a == "-h") {
        std::fputs(command.help, stdout);
        return 0;
      }
    }
    try {
      return command.run(rest);
    } catch (const attune::cli::UsageError& e) {
      report(e.what());
      return 2;
    } catch (const attune::Error& e) {
      report(e.what());
      return 1;
    } catch (const std::bad_alloc&) {
      report("out of memory");
      return 1;
    } catch (const std::exception& e) {
      report(e.what());
      return 1;
    }
  }
  report(("unknown command '" + args[0] + "' (see attune --help)").c_str());
  return 2;
}
