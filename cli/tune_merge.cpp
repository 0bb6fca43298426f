// `attune tune-merge`: joins the tuning files (or tune logs) of several hosts into one fleet file
// whose machines `auto` picks from at run time (docs/tuning.md, "A fleet of machines").
#include "commands.hpp"

#include "args.hpp"
#include "common.hpp"
#include "records.hpp"

#include <attune/attune.hpp>

#include <algorithm>
#include <cstdio>

namespace attune::cli {

const char* const kTuneMergeHelp =
    "usage: attune tune-merge A.json B.json ... -o fleet.json [--header fleet.h]\n\n"
    "Joins run-time tuning files (written by `attune tune --tuning`, or earlier merges) and tune\n"
    "logs (--json of `attune tune`) into one tuning file holding every machine's table. Tables of\n"
    "the same machine (equal CPU model, ISA set, cores and cache sizes, and build) become one; on\n"
    "a key both have, the file listed first wins. At run time `auto` uses the table of the\n"
    "machine it runs on, else the nearest with the same ISA set (see `attune info`).\n"
    "--header also writes the machines as one compiled-in table (build with\n"
    "-DATTUNE_TUNED_CONFIG=fleet.h); start-up picks the machine by the same rule.\n"
    "Exit status: 0 success, 1 data/input error, 2 usage error.\n";

namespace {

// A tuning file's machines, or a tune log's one machine. `keep` holds the logs the entries
// point into.
std::vector<detail::MachineTable> read_input(const std::string& path, std::vector<tuner::Log>& keep) {
  const std::string text = tuner::read_text(path);
  const std::size_t nl = text.find('\n');
  const tuner::JsonObject first = tuner::parse_json_object(text.substr(0, nl));
  if (auto t = first.find("type"); t != first.end() && t->second.string == "provenance") {
    keep.push_back(tuner::parse_log(text, path));
    return {tuner::log_machine_table(keep.back())};
  }
  return detail::parse_tuning(text, path);
}

}  // namespace

int cmd_tune_merge(const std::vector<std::string>& argv_in) {
  std::vector<std::string> argv = argv_in;
  for (std::string& s : argv)
    if (s == "-o") s = "--out";
  const Args a(argv, {"--out", "--header"}, {});
  const std::string out = a.required("--out");
  const auto header = a.get("--header");
  if (a.positional().empty()) throw UsageError("no input files (attune tune-merge A.json B.json ... -o fleet.json)");
  check_output_dir(out);
  if (header) check_output_dir(*header);
  std::vector<tuner::Log> logs;
  logs.reserve(a.positional().size());  // entries point into them: no reallocation
  std::vector<detail::MachineTable> merged;
  for (const std::string& path : a.positional()) {
    for (detail::MachineTable& m : read_input(path, logs)) {
      if (m.unknown > 0)
        std::fprintf(stderr, "tune-merge: %s: dropped %zu entries naming a kernel, ISA or type this build does not know\n",
                     path.c_str(), m.unknown);
      if (m.signature != build_signature())
        std::fprintf(stderr, "tune-merge: %s: machine %s was measured with another build (%s; this build: %s)\n",
                     path.c_str(), m.machine.cpu.c_str(), m.signature_text.c_str(), build_signature_text().c_str());
      auto same = std::find_if(merged.begin(), merged.end(), [&](const detail::MachineTable& x) {
        return x.signature == m.signature && detail::same_machine(x.machine, m.machine);
      });
      if (same == merged.end()) {
        merged.push_back(std::move(m));
        continue;
      }
      // The same machine again: add the keys it lacks (the first file wins on a shared key).
      for (std::size_t i = 0; i < m.entries.size(); ++i) {
        const TunedEntry& e = m.entries[i];
        const bool have = std::any_of(same->entries.begin(), same->entries.end(), [&](const TunedEntry& x) {
          return !tuned_order(x, e) && !tuned_order(e, x);
        });
        if (have) continue;
        same->entries.push_back(e);
        same->shapes.push_back(m.shapes[i]);
      }
      // Keep the table sorted (entries and shapes together).
      std::vector<std::size_t> order(same->entries.size());
      for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
      std::stable_sort(order.begin(), order.end(),
                       [&](std::size_t x, std::size_t y) { return tuned_order(same->entries[x], same->entries[y]); });
      std::vector<TunedEntry> entries;
      std::vector<std::string> shapes;
      for (std::size_t i : order) {
        entries.push_back(same->entries[i]);
        shapes.push_back(same->shapes[i]);
      }
      same->entries = std::move(entries);
      same->shapes = std::move(shapes);
    }
  }
  for (std::size_t i = 0; i < merged.size(); ++i) merged[i].id = "m" + std::to_string(i);
  std::string sources;
  for (const std::string& path : a.positional()) sources += (sources.empty() ? "" : " ") + path;
  const std::string header_text = header ? tuner::generate_fleet_header(merged, sources) : "";  // may refuse
  tuner::write_atomic(out, detail::tuning_text(merged));
  if (header) tuner::write_atomic(*header, header_text);
  std::size_t entries = 0;
  for (const auto& m : merged) entries += m.entries.size();
  std::fprintf(stderr, "tune-merge: wrote %s: %zu machines, %zu entries\n", out.c_str(), merged.size(), entries);
  for (const auto& m : merged) std::fprintf(stderr, "  %s: %s\n", m.id.c_str(), to_string(m.machine).c_str());
  return 0;
}

}  // namespace attune::cli
