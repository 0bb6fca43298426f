// attune._attune: the nanobind bindings under the Python package. Tensors arrive C-contiguous on
// the CPU (attune/__init__.py copies other layouts and checks devices); this file reads their
// shapes and element types into an attune::Problem, runs the call with the GIL released, and turns
// attune's exceptions into Python's (InvalidArgument -> ValueError, MemoryError -> MemoryError).
#include <attune/attune.hpp>

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/string_view.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using attune::Dtype;
using attune::Isa;
using In = nb::ndarray<nb::ro, nb::device::cpu, nb::c_contig>;
using Out = nb::ndarray<nb::device::cpu, nb::c_contig>;

// float32, float16 and bfloat16 (DLPack's bfloat code, as torch exports it). uint16 is bfloat16
// too: numpy cannot export ml_dtypes.bfloat16 through DLPack, so the Python layer passes such an
// array as a uint16 view of the same bits (and refuses real uint16 input before getting here).
Dtype dtype_of(const nb::dlpack::dtype& t, const char* name) {
  using Code = nb::dlpack::dtype_code;
  if (t.lanes == 1) {
    if (t.code == static_cast<std::uint8_t>(Code::Float) && t.bits == 32) return Dtype::fp32;
    if (t.code == static_cast<std::uint8_t>(Code::Float) && t.bits == 16) return Dtype::fp16;
    if (t.code == static_cast<std::uint8_t>(Code::Bfloat) && t.bits == 16) return Dtype::bf16;
    if (t.code == static_cast<std::uint8_t>(Code::UInt) && t.bits == 16) return Dtype::bf16;
  }
  throw nb::type_error((std::string(name) + ": element type must be float32, float16 or bfloat16").c_str());
}

Dtype dtype_named(const std::string& name) {
  if (const auto d = attune::parse_dtype(name)) return *d;
  throw nb::type_error(("element type must be fp32, bf16 or fp16, got '" + name + "'").c_str());
}

[[noreturn]] void bad_shape(const std::string& what) { throw nb::value_error(what.c_str()); }

using Dims = std::vector<std::int64_t>;

Dims dims_of(const In& a) {
  Dims d(a.ndim());
  for (std::size_t i = 0; i < d.size(); ++i) d[i] = static_cast<std::int64_t>(a.shape(i));
  return d;
}

std::string shape_text(const Dims& d) {
  std::string s = "(";
  for (std::size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + (d.size() == 1 ? ",)" : ")");
}

// The problem three tensor shapes describe: 3-D [heads, seq, d] (batch 1) or 4-D
// [batch, heads, seq, d]; q's storage type and k/v's.
attune::Problem problem_of(const Dims& q, const Dims& k, const Dims& v, Dtype dtype, Dtype kv_dtype, bool causal,
                           std::optional<float> scale) {
  const auto n = q.size();
  const auto all = [&] { return shape_text(q) + ", " + shape_text(k) + ", " + shape_text(v); };
  if (n != 3 && n != 4) bad_shape("q: expected 3-D [heads, seq, d] or 4-D [batch, heads, seq, d], got shape " + shape_text(q));
  if (k.size() != n || v.size() != n) bad_shape("q, k and v must have the same number of dimensions, got shapes " + all());
  const std::size_t o = n == 4 ? 1 : 0;  // offset of the heads axis
  attune::Problem p;
  p.batch = n == 4 ? q[0] : 1;
  p.heads_q = q[o];
  p.seq_q = q[o + 1];
  p.d_k = q[o + 2];
  p.heads_kv = k[o];
  p.seq_kv = k[o + 1];
  p.d_v = v[o + 2];
  if (n == 4 && (k[0] != p.batch || v[0] != p.batch)) bad_shape("batch: q, k and v must agree on axis 0, got shapes " + all());
  if (k[o + 2] != p.d_k) bad_shape("d_k: q and k must agree on the last axis, got shapes " + all());
  if (v[o] != p.heads_kv || v[o + 1] != p.seq_kv) bad_shape("k and v must agree on heads and seq, got shapes " + all());
  p.causal = causal;
  p.scale = scale;
  p.dtype = dtype;
  p.kv_dtype = kv_dtype;
  return p;
}

attune::Problem problem_of(const In& q, const In& k, const In& v, bool causal, std::optional<float> scale) {
  const Dtype kd = dtype_of(k.dtype(), "k");
  if (dtype_of(v.dtype(), "v") != kd) throw nb::type_error("k and v must have the same element type");
  return problem_of(dims_of(q), dims_of(k), dims_of(v), dtype_of(q.dtype(), "q"), kd, causal, scale);
}

// out's shape must be q's with the last axis d_v.
void check_out(const Dims& out, const Dims& q, const attune::Problem& p) {
  Dims want = q;
  want.back() = p.d_v;
  if (out != want) bad_shape("out: shape must be " + shape_text(want) + " (q's, last axis d_v), got " + shape_text(out));
}

attune::Options options_of(const std::string& kernel, const std::optional<std::string>& isa,
                           std::optional<int> threads, std::int64_t block_q, std::int64_t block_kv,
                           int kv_splits, std::size_t max_workspace_bytes) {
  attune::Options opt;
  opt.kernel = kernel;
  if (isa) {
    opt.isa = attune::parse_isa(*isa);
    if (!opt.isa) {
      std::string known;
      for (Isa i : attune::compiled_isas()) known += (known.empty() ? "" : ", ") + std::string(attune::to_string(i));
      throw nb::value_error(("isa: unknown ISA '" + *isa + "' (compiled: " + known + ")").c_str());
    }
  }
  if (threads) {
    if (*threads < 1) throw nb::value_error(("threads: must be >= 1 (or None for all cores), got " + std::to_string(*threads)).c_str());
    opt.config.threads = *threads;
  }
  if (block_q < 0 || block_kv < 0 || kv_splits < 0)
    throw nb::value_error("block_q, block_kv and kv_splits must be >= 0 (0: the kernel's default)");
  opt.config.block_q = block_q;
  opt.config.block_kv = block_kv;
  opt.config.kv_splits = kv_splits;
  opt.max_workspace_bytes = max_workspace_bytes;
  return opt;
}

void attention(const In& q, const In& k, const In& v, Out& out, bool causal, std::optional<float> scale,
               const std::string& kernel, const std::optional<std::string>& isa, std::optional<int> threads,
               std::int64_t block_q, std::int64_t block_kv, int kv_splits, std::size_t max_workspace_bytes) {
  const attune::Problem p = problem_of(q, k, v, causal, scale);
  const attune::Options opt = options_of(kernel, isa, threads, block_q, block_kv, kv_splits, max_workspace_bytes);
  Dims od(out.ndim());
  for (std::size_t i = 0; i < od.size(); ++i) od[i] = static_cast<std::int64_t>(out.shape(i));
  check_out(od, dims_of(q), p);
  if (dtype_of(out.dtype(), "out") != p.dtype) throw nb::type_error("out: element type must be q's");
  nb::gil_scoped_release release;
  attune::attention(p, q.data(), k.data(), v.data(), out.data(), opt);
}

// The same call on raw addresses of C-contiguous CPU tensors that the caller keeps alive (torch:
// Tensor.data_ptr() and .shape cost a tenth of a microsecond, torch's __dlpack__ a few per tensor;
// measured on the tiny problem of bench/python_bench.py, this path halves the call's overhead).
void attention_ptr(std::uintptr_t q, const Dims& qd, std::uintptr_t k, const Dims& kd, std::uintptr_t v,
                   const Dims& vd, std::uintptr_t out, const Dims& od, const std::string& dtype,
                   const std::string& kv_dtype, bool causal, std::optional<float> scale, const std::string& kernel,
                   const std::optional<std::string>& isa, std::optional<int> threads, std::int64_t block_q,
                   std::int64_t block_kv, int kv_splits, std::size_t max_workspace_bytes) {
  const attune::Problem p = problem_of(qd, kd, vd, dtype_named(dtype), dtype_named(kv_dtype), causal, scale);
  const attune::Options opt = options_of(kernel, isa, threads, block_q, block_kv, kv_splits, max_workspace_bytes);
  check_out(od, qd, p);
  nb::gil_scoped_release release;
  attune::attention(p, reinterpret_cast<const void*>(q), reinterpret_cast<const void*>(k),
                    reinterpret_cast<const void*>(v), reinterpret_cast<void*>(out), opt);
}

// For bench/python_bench.py: seconds per call of the C++ API itself on these tensors and options,
// timed in C++ (`calls` back-to-back calls, GIL released), so the Python call's overhead can be
// measured against it in the same process and the same minute.
double time_cpp_calls(const In& q, const In& k, const In& v, Out& out, const std::string& kernel,
                      std::optional<int> threads, int calls) {
  const attune::Problem p = problem_of(q, k, v, false, std::nullopt);
  const attune::Options opt = options_of(kernel, std::nullopt, threads, 0, 0, 0, 0);
  nb::gil_scoped_release release;
  attune::attention(p, q.data(), k.data(), v.data(), out.data(), opt);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < calls; ++i) attune::attention(p, q.data(), k.data(), v.data(), out.data(), opt);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / std::max(calls, 1);
}

std::size_t workspace_bytes(const Dims& q, const Dims& k, const Dims& v, const std::string& dtype,
                            const std::string& kv_dtype, bool causal, std::optional<float> scale,
                            const std::string& kernel, const std::optional<std::string>& isa,
                            std::optional<int> threads, std::int64_t block_q, std::int64_t block_kv, int kv_splits) {
  const attune::Problem p = problem_of(q, k, v, dtype_named(dtype), dtype_named(kv_dtype), causal, scale);
  return attune::workspace_bytes(p, options_of(kernel, isa, threads, block_q, block_kv, kv_splits, 0));
}

nb::dict resolve(const Dims& q, const Dims& k, const Dims& v, const std::string& dtype, const std::string& kv_dtype,
                 bool causal, std::optional<float> scale, const std::string& kernel,
                 const std::optional<std::string>& isa, std::optional<int> threads, std::int64_t block_q,
                 std::int64_t block_kv, int kv_splits) {
  const attune::Problem p = problem_of(q, k, v, dtype_named(dtype), dtype_named(kv_dtype), causal, scale);
  const attune::Choice c = attune::resolve(p, options_of(kernel, isa, threads, block_q, block_kv, kv_splits, 0));
  nb::dict d;
  d["kernel"] = std::string(c.kernel->name());
  d["isa"] = std::string(attune::to_string(c.isa));
  d["block_q"] = c.config.block_q;
  d["block_kv"] = c.config.block_kv;
  d["threads"] = c.config.threads;
  d["kv_splits"] = c.config.kv_splits;
  d["micro"] = c.config.micro;
  return d;
}

std::vector<std::string> names(const std::vector<Isa>& isas) {
  std::vector<std::string> out;
  for (Isa i : isas) out.emplace_back(attune::to_string(i));
  return out;
}

// One dict per registered kernel; `dtypes` maps each runnable ISA to the storage types it takes
// for all four tensors (Kernel::supports), as `attune kernels` lists them.
nb::list kernels() {
  nb::list out;
  for (const attune::Kernel* kern : attune::kernels()) {
    nb::dict d;
    d["name"] = std::string(kern->name());
    d["description"] = std::string(kern->description());
    d["rank"] = kern->rank();
    d["isas"] = names(kern->isas());
    const std::vector<Isa> runnable = attune::runnable_isas(*kern);
    d["runnable_isas"] = names(runnable);
    nb::dict dtypes;
    for (Isa i : runnable) {
      std::vector<std::string> ok;
      for (Dtype t : attune::kAllDtypes) {
        attune::Problem p;
        p.dtype = t;
        if (kern->supports(p, i)) ok.emplace_back(attune::to_string(t));
      }
      dtypes[std::string(attune::to_string(i)).c_str()] = ok;
    }
    d["dtypes"] = dtypes;
    out.append(d);
  }
  return out;
}

nb::dict info() {
  nb::dict d;
  d["version"] = std::string(attune::version());
  d["git_revision"] = std::string(attune::git_revision());
  d["compiler"] = std::string(attune::compiler());
  d["build_type"] = std::string(attune::build_type());
  d["compile_flags"] = std::string(attune::compile_flags());
  d["cpu"] = std::string(attune::cpu_model());
  d["cores"] = std::thread::hardware_concurrency();
  std::vector<Isa> detected;
  for (Isa i : attune::compiled_isas())
    if (attune::cpu_supports(i)) detected.push_back(i);
  d["isa_compiled"] = names(attune::compiled_isas());
  d["isa_detected"] = names(detected);  // of the compiled ones
  d["isa_runnable"] = names(attune::runnable_isas());
  d["isa_default"] = std::string(attune::to_string(attune::default_isa()));
  d["tuned_table"] = attune::tuned_table_summary();
#ifdef ATTUNE_WITH_BLAS
  d["with_blas"] = true;
#else
  d["with_blas"] = false;
#endif
  return d;
}

#ifdef ATTUNE_WITH_BLAS
using In32 = nb::ndarray<nb::ro, float, nb::device::cpu, nb::c_contig>;
using Out32 = nb::ndarray<float, nb::device::cpu, nb::c_contig>;

std::int64_t udim(std::size_t n) { return static_cast<std::int64_t>(n); }

// x: [batch, seq, d_model] or [seq, d_model]; weights as attune/mha.hpp lays them out (y = x W).
void mha(const In32& x, const In32& wq, const In32& wk, const In32& wv, const In32& wo, Out32& y,
         std::int64_t heads_q, std::optional<std::int64_t> heads_kv, bool causal, std::optional<float> scale,
         const std::string& kernel, const std::optional<std::string>& isa, std::optional<int> threads,
         std::size_t max_workspace_bytes) {
  if (x.ndim() != 2 && x.ndim() != 3) bad_shape("x: expected [batch, seq, d_model] or [seq, d_model]");
  for (const In32* w : {&wq, &wk, &wv, &wo})
    if (w->ndim() != 2) bad_shape("wq, wk, wv, wo: expected 2-D [in, out] weights (y = x W)");
  attune::MhaProblem p;
  const bool b3 = x.ndim() == 3;
  p.batch = b3 ? udim(x.shape(0)) : 1;
  p.seq = udim(x.shape(b3 ? 1 : 0));
  p.d_model = udim(x.shape(b3 ? 2 : 1));
  p.heads_q = heads_q;
  p.heads_kv = heads_kv.value_or(heads_q);
  if (p.heads_q < 1 || p.heads_kv < 1) bad_shape("heads_q and heads_kv must be >= 1");
  const std::int64_t nq = udim(wq.shape(1)), nk = udim(wk.shape(1)), nv = udim(wv.shape(1));
  if (nq % p.heads_q || nk % p.heads_kv || nv % p.heads_kv)
    bad_shape("wq.shape[1] must be a multiple of heads_q, wk.shape[1] and wv.shape[1] of heads_kv");
  p.d_k = nq / p.heads_q;
  p.d_v = nv / p.heads_kv;
  if (nk / p.heads_kv != p.d_k) bad_shape("wk.shape[1] / heads_kv must equal wq.shape[1] / heads_q (d_k)");
  const auto dm = static_cast<std::size_t>(p.d_model);
  if (wq.shape(0) != dm || wk.shape(0) != dm || wv.shape(0) != dm || wo.shape(1) != dm)
    bad_shape("wq, wk, wv must have d_model rows and wo d_model columns (d_model = x.shape[-1])");
  if (udim(wo.shape(0)) != p.heads_q * p.d_v) bad_shape("wo.shape[0] must be heads_q * d_v");
  if (y.ndim() != x.ndim()) bad_shape("y: shape must be x's");
  for (std::size_t i = 0; i < x.ndim(); ++i)
    if (y.shape(i) != x.shape(i)) bad_shape("y: shape must be x's");
  p.causal = causal;
  p.scale = scale;
  const attune::Options opt = options_of(kernel, isa, threads, 0, 0, 0, max_workspace_bytes);
  nb::gil_scoped_release release;
  attune::mha(p, x.data(), wq.data(), wk.data(), wv.data(), wo.data(), y.data(), opt);
}
#endif

}  // namespace

NB_MODULE(_attune, m) {
  m.doc() = "attune's C++ bindings; use the `attune` package, not this module.";
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const attune::InvalidArgument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const attune::MemoryError& e) {
      PyErr_SetString(PyExc_MemoryError, e.what());
    } catch (const attune::IoError& e) {
      PyErr_SetString(PyExc_OSError, e.what());
    }
  });
  m.def("attention", &attention, "q"_a, "k"_a, "v"_a, "out"_a, "causal"_a, "scale"_a.none(), "kernel"_a,
        "isa"_a.none(), "threads"_a.none(), "block_q"_a, "block_kv"_a, "kv_splits"_a, "max_workspace_bytes"_a);
  m.def("attention_ptr", &attention_ptr, "q"_a, "q_shape"_a, "k"_a, "k_shape"_a, "v"_a, "v_shape"_a, "out"_a,
        "out_shape"_a, "dtype"_a, "kv_dtype"_a, "causal"_a, "scale"_a.none(), "kernel"_a, "isa"_a.none(),
        "threads"_a.none(), "block_q"_a, "block_kv"_a, "kv_splits"_a, "max_workspace_bytes"_a);
  m.def("workspace_bytes", &workspace_bytes, "q_shape"_a, "k_shape"_a, "v_shape"_a, "dtype"_a, "kv_dtype"_a,
        "causal"_a, "scale"_a.none(), "kernel"_a, "isa"_a.none(), "threads"_a.none(), "block_q"_a, "block_kv"_a,
        "kv_splits"_a);
  m.def("resolve", &resolve, "q_shape"_a, "k_shape"_a, "v_shape"_a, "dtype"_a, "kv_dtype"_a, "causal"_a,
        "scale"_a.none(), "kernel"_a, "isa"_a.none(), "threads"_a.none(), "block_q"_a, "block_kv"_a, "kv_splits"_a);
  m.def("_time_cpp_calls", &time_cpp_calls, "q"_a, "k"_a, "v"_a, "out"_a, "kernel"_a, "threads"_a.none(), "calls"_a);
  m.def("kernels", &kernels);
  m.def("info", &info);
#ifdef ATTUNE_WITH_BLAS
  m.def("mha", &mha, "x"_a, "wq"_a, "wk"_a, "wv"_a, "wo"_a, "y"_a, "heads_q"_a, "heads_kv"_a.none(), "causal"_a,
        "scale"_a.none(), "kernel"_a, "isa"_a.none(), "threads"_a.none(), "max_workspace_bytes"_a);
#endif
}
