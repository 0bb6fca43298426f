// `attune mha` (built with BLAS): multi-head attention with its projections on .npy tensors.
#include "commands.hpp"

#include "common.hpp"
#include "npy.hpp"

#include <attune/attune.hpp>

#include <string>

namespace attune::cli {

const char* const kMhaHelp =
    "usage: attune mha --x X.npy --wq WQ.npy --wk WK.npy --wv WV.npy --wo WO.npy --heads-q N\n"
    "                  [--heads-kv N] --out Y.npy [--causal] [--scale S] [--kernel NAME] [--isa ISA]\n"
    "                  [--threads N] [--block-q N] [--block-kv N]\n"
    "                  [--kv-splits N] [--micro auto|narrow|wide] [--max-memory SIZE]\n\n"
    "y = concat_h(attention(x WQ_h, x WK_g, x WV_g)) WO with g = h / (heads_q / heads_kv).\n"
    "Inputs: float32 little-endian C-order .npy. X: [batch, seq, d_model] (or 2-D [seq, d_model]);\n"
    "WQ: [d_model, heads_q * d_k], WK: [d_model, heads_kv * d_k], WV: [d_model, heads_kv * d_v],\n"
    "WO: [heads_q * d_v, d_model] (y = x W, row-major; column h * d + c is dimension c of head h).\n"
    "--heads-kv defaults to --heads-q and must divide it. Output: X's shape, written atomically.\n"
    "--threads also sets the BLAS threads of the projections. Default kernel: auto.\n"
    "--max-memory SIZE caps the working memory as for 'attune run'; here it also counts the\n"
    "projected Q, K, V and the attention output.\n"
    "Exit status: 0 success, 1 data/input error, 2 usage error.\n";

namespace {

std::string shape_text(const npy::Array& a) {
  std::string s = "[";
  for (std::size_t i = 0; i < a.shape.size(); ++i) s += (i ? ", " : "") + std::to_string(a.shape[i]);
  return s + "]";
}

// The weight `name` must be 2-D with `rows` rows and a multiple of `heads` columns; returns
// columns / heads (the per-head dimension).
std::int64_t head_dim(const npy::Array& w, const char* name, std::int64_t rows, std::int64_t heads,
                      const char* heads_flag) {
  if (w.shape.size() != 2) throw IoError(std::string(name) + " must be 2-D, got shape " + shape_text(w));
  if (w.shape[0] != rows)
    throw IoError(std::string(name) + " has " + std::to_string(w.shape[0]) + " rows, expected d_model = " +
                  std::to_string(rows) + " (shape " + shape_text(w) + ")");
  if (w.shape[1] == 0 || w.shape[1] % heads != 0)
    throw IoError(std::string(name) + " has " + std::to_string(w.shape[1]) + " columns, not a positive multiple of " +
                  heads_flag + " = " + std::to_string(heads));
  return w.shape[1] / heads;
}

}  // namespace

int cmd_mha(const std::vector<std::string>& argv) {
  const Args a(argv,
               with({"--x", "--wq", "--wk", "--wv", "--wo", "--out", "--heads-q", "--heads-kv", "--scale", "--max-memory"},
                    kRunFlags),
               {"--causal"});
  no_positional(a);
  const Options options = parse_options(a);
  const auto x_path = a.required("--x"), wq_path = a.required("--wq"), wk_path = a.required("--wk");
  const auto wv_path = a.required("--wv"), wo_path = a.required("--wo"), out_path = a.required("--out");
  if (!a.has("--heads-q")) throw UsageError("missing required option --heads-q");
  const std::int64_t heads_q = *a.get_int("--heads-q", 1);
  const std::int64_t heads_kv = a.get_int("--heads-kv", 1).value_or(heads_q);
  if (heads_q % heads_kv != 0)
    throw UsageError("--heads-q = " + std::to_string(heads_q) + " is not a multiple of --heads-kv = " +
                     std::to_string(heads_kv));
  const auto scale = a.get_float("--scale");
  check_output_dir(out_path);

  const npy::Array x = npy::read(x_path), wq = npy::read(wq_path), wk = npy::read(wk_path);
  const npy::Array wv = npy::read(wv_path), wo = npy::read(wo_path);
  if (x.shape.size() != 2 && x.shape.size() != 3)
    throw IoError("X must be 2-D [seq, d_model] or 3-D [batch, seq, d_model], got shape " + shape_text(x));
  MhaProblem p;
  p.batch = x.shape.size() == 3 ? x.shape[0] : 1;
  p.seq = x.shape[x.shape.size() - 2];
  p.d_model = x.shape.back();
  p.heads_q = heads_q;
  p.heads_kv = heads_kv;
  p.d_k = head_dim(wq, "WQ", p.d_model, heads_q, "--heads-q");
  if (head_dim(wk, "WK", p.d_model, heads_kv, "--heads-kv") != p.d_k)
    throw IoError("WK has " + std::to_string(wk.shape[1]) + " columns, expected heads_kv * d_k = " +
                  std::to_string(heads_kv * p.d_k) + " (d_k = " + std::to_string(p.d_k) + " from WQ)");
  p.d_v = head_dim(wv, "WV", p.d_model, heads_kv, "--heads-kv");
  if (wo.shape.size() != 2 || wo.shape[0] != heads_q * p.d_v || wo.shape[1] != p.d_model)
    throw IoError("WO must have shape [heads_q * d_v, d_model] = [" + std::to_string(heads_q * p.d_v) + ", " +
                  std::to_string(p.d_model) + "], got " + shape_text(wo));
  p.causal = a.has("--causal");
  p.scale = scale;
  p.validate();

  std::vector<float> y(static_cast<std::size_t>(p.y_elements()));
  mha(p, x.data.data(), wq.data.data(), wk.data.data(), wv.data.data(), wo.data.data(), y.data(), options);
  npy::write(out_path, x.shape, y.data());
  return 0;
}

}  // namespace attune::cli
