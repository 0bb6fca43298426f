// Entry point of the `attune` command: dispatches to a subcommand and maps errors to exit
// codes (1: data or input error, 2: usage error) with a one-line "error: ..." on stderr.
#include "args.hpp"
#include "commands.hpp"

#include <attune/error.hpp>
#include <attune/version.hpp>

#include <cstdio>
#include <exception>
#include <new>

namespace {

void print_usage(std::FILE* out) {
  std::fprintf(out, "usage: attune <command> [options]\n\ncommands:\n");
  for (const auto& c : attune::cli::commands()) std::fprintf(out, "  %-9s %s\n", c.name, c.summary);
  std::fprintf(out, "\nRun 'attune <command> --help' for a command's options.\n");
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
      std::fprintf(stderr, "error: %s\n", e.what());
      return 2;
    } catch (const attune::Error& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
      return 1;
    } catch (const std::bad_alloc&) {
      std::fprintf(stderr, "error: out of memory\n");
      return 1;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
      return 1;
    }
  }
  std::fprintf(stderr, "error: unknown command '%s' (see attune --help)\n", args[0].c_str());
  return 2;
}
