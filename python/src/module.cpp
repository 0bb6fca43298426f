// attune._attune: the nanobind bindings under the Python package. One call reads numpy arrays
// (numpy's C API: fields of the array struct, no DLPack capsule) or torch CPU tensors (data_ptr,
// shape, stride through the C API, no DLPack) into an attune::Problem with their strides, allocates
// the output, runs attune::attention with the GIL released, and turns attune's exceptions into
// Python's (InvalidArgument -> ValueError, MemoryError -> MemoryError). Tensors whose rows are not
// contiguous, or that the chosen kernel cannot read strided, are gathered into contiguous copies
// here (counted: _copies()), everything else is read in place.
#include <attune/attune.hpp>

#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/string_view.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using attune::Dtype;
using attune::Isa;

// Tensors gathered into contiguous copies (inputs, and outputs computed into a temporary and
// scattered back), and masks gathered into contiguous planes: the tests read these to check that
// strided inputs are read in place.
std::atomic<std::int64_t> g_copies{0}, g_mask_copies{0};

// ml_dtypes.bfloat16 (registered by the package when ml_dtypes is installed).
PyArray_Descr* g_np_bf16 = nullptr;

// torch's objects, looked up once the first non-numpy argument arrives with torch imported.
struct Torch {
  PyTypeObject* tensor = nullptr;
  PyObject *f32 = nullptr, *f16 = nullptr, *bf16 = nullptr, *boolean = nullptr;
  PyObject *empty = nullptr, *empty_like = nullptr, *is_grad_enabled = nullptr;
};
Torch g_torch;
PyObject *s_is_cpu, *s_dtype, *s_shape, *s_stride, *s_data_ptr, *s_device, *s_requires_grad, *s_dtype_kwnames;

bool have_torch() {
  if (g_torch.tensor) return true;
  PyObject* mod = PyImport_GetModule(nb::str("torch").ptr());  // only if already imported
  if (!mod) {
    PyErr_Clear();
    return false;
  }
  nb::object torch = nb::steal(mod);
  g_torch.tensor = reinterpret_cast<PyTypeObject*>(nb::object(torch.attr("Tensor")).release().ptr());
  g_torch.f32 = nb::object(torch.attr("float32")).release().ptr();
  g_torch.f16 = nb::object(torch.attr("float16")).release().ptr();
  g_torch.bf16 = nb::object(torch.attr("bfloat16")).release().ptr();
  g_torch.boolean = nb::object(torch.attr("bool")).release().ptr();
  g_torch.empty = nb::object(torch.attr("empty")).release().ptr();
  g_torch.empty_like = nb::object(torch.attr("empty_like")).release().ptr();
  g_torch.is_grad_enabled = nb::object(torch.attr("is_grad_enabled")).release().ptr();
  return true;
}

enum class Framework : std::uint8_t { numpy, torch };
constexpr int kMaxDims = 8;

// What attention() needs of one array: address, shape, byte strides, element type.
struct View {
  char* data = nullptr;
  int ndim = 0;
  std::int64_t shape[kMaxDims]{}, strides[kMaxDims]{};  // strides in bytes
  std::size_t itemsize = 0;
  Dtype dtype = Dtype::fp32;
  bool boolean = false;   // a bool mask (itemsize 1)
  bool writeable = true;
  bool aligned = true;
};

std::string type_name(PyObject* o) {
  nb::handle t(reinterpret_cast<PyObject*>(Py_TYPE(o)));
  return nb::cast<std::string>(t.attr("__module__")) + "." + nb::cast<std::string>(t.attr("__qualname__"));
}

std::string str_of(PyObject* o) { return nb::cast<std::string>(nb::str(nb::handle(o))); }

// A TypeError with this message (its own type, so one can be caught and replaced).
struct TypeError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
[[noreturn]] void type_error(const std::string& what) { throw TypeError(what); }
[[noreturn]] void bad_shape(const std::string& what) { throw nb::value_error(what.c_str()); }

// A numpy array as a View: float32, float16 or ml_dtypes.bfloat16 (masks: bool or float32).
void numpy_view(PyObject* o, const char* name, bool mask, View& v) {
  auto* a = reinterpret_cast<PyArrayObject*>(o);
  v.ndim = PyArray_NDIM(a);
  if (v.ndim > kMaxDims) bad_shape(std::string(name) + ": expected at most 4 dimensions, got " + std::to_string(v.ndim));
  const int t = PyArray_TYPE(a);
  if (mask && t == NPY_BOOL) {
    v.boolean = true;
    v.itemsize = 1;
  } else if (t == NPY_FLOAT32) {
    v.dtype = Dtype::fp32;
    v.itemsize = 4;
  } else if (!mask && t == NPY_FLOAT16) {
    v.dtype = Dtype::fp16;
    v.itemsize = 2;
  } else if (!mask && g_np_bf16 && PyArray_DESCR(a)->typeobj == g_np_bf16->typeobj) {
    v.dtype = Dtype::bf16;
    v.itemsize = 2;
  } else {
    type_error(std::string(name) + (mask ? ": element type must be bool or float32" : ": element type must be float32, float16 or bfloat16") +
               ", got numpy " + str_of(reinterpret_cast<PyObject*>(PyArray_DESCR(a))));
  }
  if (!PyArray_ISNOTSWAPPED(a)) type_error(std::string(name) + ": must be in the machine's byte order");
  v.data = static_cast<char*>(PyArray_DATA(a));
  const npy_intp* dims = PyArray_DIMS(a);
  const npy_intp* strides = PyArray_STRIDES(a);
  for (int i = 0; i < v.ndim; ++i) {
    v.shape[i] = dims[i];
    v.strides[i] = strides[i];
  }
  v.writeable = PyArray_ISWRITEABLE(a);
  v.aligned = PyArray_ISALIGNED(a);
}

PyObject* get(PyObject* o, PyObject* attr) {
  PyObject* r = PyObject_GetAttr(o, attr);
  if (!r) throw nb::python_error();
  return r;
}

PyObject* call0(PyObject* o, PyObject* method) {
  PyObject* r = PyObject_VectorcallMethod(method, &o, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, nullptr);
  if (!r) throw nb::python_error();
  return r;
}

void torch_view(PyObject* o, const char* name, bool mask, View& v) {
  nb::object is_cpu = nb::steal(get(o, s_is_cpu));
  if (is_cpu.ptr() != Py_True) {
    nb::object dev = nb::steal(get(o, s_device));
    type_error(std::string(name) + ": attune runs on the CPU, got a tensor on device '" + str_of(dev.ptr()) + "'");
  }
  nb::object dt = nb::steal(get(o, s_dtype));
  const PyObject* d = dt.ptr();
  if (mask && d == g_torch.boolean) {
    v.boolean = true;
    v.itemsize = 1;
  } else if (d == g_torch.f32) {
    v.dtype = Dtype::fp32;
    v.itemsize = 4;
  } else if (!mask && d == g_torch.f16) {
    v.dtype = Dtype::fp16;
    v.itemsize = 2;
  } else if (!mask && d == g_torch.bf16) {
    v.dtype = Dtype::bf16;
    v.itemsize = 2;
  } else {
    type_error(std::string(name) + (mask ? ": element type must be bool or float32" : ": element type must be float32, float16 or bfloat16") +
               ", got " + str_of(dt.ptr()));
  }
  nb::object shape = nb::steal(get(o, s_shape));  // torch.Size, a tuple
  nb::object strides = nb::steal(call0(o, s_stride));
  v.ndim = static_cast<int>(PyTuple_GET_SIZE(shape.ptr()));
  if (v.ndim > kMaxDims) bad_shape(std::string(name) + ": expected at most 4 dimensions, got " + std::to_string(v.ndim));
  for (int i = 0; i < v.ndim; ++i) {
    v.shape[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(shape.ptr(), i));
    v.strides[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(strides.ptr(), i)) * static_cast<std::int64_t>(v.itemsize);
  }
  nb::object ptr = nb::steal(call0(o, s_data_ptr));
  v.data = static_cast<char*>(PyLong_AsVoidPtr(ptr.ptr()));
  v.aligned = reinterpret_cast<std::uintptr_t>(v.data) % v.itemsize == 0;
}

Framework framework_of(PyObject* o) {
  if (PyArray_Check(o)) return Framework::numpy;
  if (have_torch() && PyObject_TypeCheck(o, g_torch.tensor)) return Framework::torch;
  throw std::invalid_argument("");
}

void view_of(PyObject* o, Framework fw, const char* name, bool mask, View& v) {
  if (fw == Framework::numpy) {
    numpy_view(o, name, mask, v);
  } else {
    torch_view(o, name, mask, v);
  }
}

std::string shape_text(const View& v) {
  std::string s = "(";
  for (int i = 0; i < v.ndim; ++i) s += (i ? ", " : "") + std::to_string(v.shape[i]);
  return s + (v.ndim == 1 ? ",)" : ")");
}

// The problem three tensor shapes describe: 3-D [heads, seq, d] (batch 1) or 4-D
// [batch, heads, seq, d]; q's storage type and k/v's.
attune::Problem problem_of(const View& q, const View& k, const View& v) {
  const int n = q.ndim;
  const auto all = [&] { return shape_text(q) + ", " + shape_text(k) + ", " + shape_text(v); };
  if (n != 3 && n != 4) bad_shape("q: expected 3-D [heads, seq, d] or 4-D [batch, heads, seq, d], got shape " + shape_text(q));
  if (k.ndim != n || v.ndim != n) bad_shape("q, k and v must have the same number of dimensions, got shapes " + all());
  const int o = n == 4 ? 1 : 0;  // offset of the heads axis
  attune::Problem p;
  p.batch = n == 4 ? q.shape[0] : 1;
  p.heads_q = q.shape[o];
  p.seq_q = q.shape[o + 1];
  p.d_k = q.shape[o + 2];
  p.heads_kv = k.shape[o];
  p.seq_kv = k.shape[o + 1];
  p.d_v = v.shape[o + 2];
  if (n == 4 && (k.shape[0] != p.batch || v.shape[0] != p.batch)) bad_shape("batch: q, k and v must agree on axis 0, got shapes " + all());
  if (k.shape[o + 2] != p.d_k) bad_shape("d_k: q and k must agree on the last axis, got shapes " + all());
  if (v.shape[o] != p.heads_kv || v.shape[o + 1] != p.seq_kv) bad_shape("k and v must agree on heads and seq, got shapes " + all());
  p.dtype = q.dtype;
  p.kv_dtype = k.dtype;
  return p;
}

// Element strides of (batch, head, row) when the view's rows can be read in place: whole,
// non-negative element strides, the last axis contiguous (or of length 1), aligned. Axes of
// length 1 get the contiguous stride, so a contiguous array compares equal to Strides::contiguous.
std::optional<attune::Strides> row_strides(const View& v) {
  if (!v.aligned) return std::nullopt;
  const int n = v.ndim;
  const auto is = static_cast<std::int64_t>(v.itemsize);
  if (v.shape[n - 1] > 1 && v.strides[n - 1] != is) return std::nullopt;
  std::int64_t el[3];
  std::int64_t dense = v.shape[n - 1];  // the contiguous stride of the axis being looked at
  for (int i = n - 2, j = 2; j >= 0; --i, --j) {
    if (i < 0) {  // 3-D: no batch axis
      el[j] = dense;
      continue;
    }
    if (v.shape[i] == 1) {
      el[j] = dense;
    } else {
      if (v.strides[i] < 0 || v.strides[i] % is != 0) return std::nullopt;
      el[j] = v.strides[i] / is;
    }
    dense *= v.shape[i];
  }
  return attune::Strides{el[0], el[1], el[2]};
}

bool same_strides(const View& a, const View& b) {
  for (int i = 0; i < a.ndim; ++i)
    if (a.strides[i] != b.strides[i]) return false;
  return true;
}

bool same(const attune::Strides& a, const attune::Strides& b) {
  return a.batch == b.batch && a.head == b.head && a.row == b.row;
}

// A contiguous copy of a view (or the contiguous destination a result is scattered from).
struct Buffer {
  std::unique_ptr<std::byte[]> bytes;
  View view;
};

// Shape-preserving copy between two views of the same shape and element size (any byte
// strides, zero and negative included). The last axis is copied with memcpy when both are dense.
void copy_view(const View& from, const View& to) {
  const int n = from.ndim;
  std::int64_t rows = 1;
  for (int i = 0; i + 1 < n; ++i) rows *= from.shape[i];
  const std::int64_t len = n ? from.shape[n - 1] : 1;
  const auto is = static_cast<std::int64_t>(from.itemsize);
  const std::int64_t fs = n ? from.strides[n - 1] : is, ts = n ? to.strides[n - 1] : is;
  std::int64_t idx[kMaxDims]{};
  for (std::int64_t r = 0; r < rows; ++r) {
    const char* src = from.data;
    char* dst = to.data;
    for (int i = 0; i + 1 < n; ++i) {
      src += idx[i] * from.strides[i];
      dst += idx[i] * to.strides[i];
    }
    if (fs == is && ts == is) {
      std::memcpy(dst, src, static_cast<std::size_t>(len * is));
    } else {
      for (std::int64_t e = 0; e < len; ++e) std::memcpy(dst + e * ts, src + e * fs, from.itemsize);
    }
    for (int i = n - 2; i >= 0; --i) {  // next row index
      if (++idx[i] < from.shape[i]) break;
      idx[i] = 0;
    }
  }
}

Buffer contiguous_like(const View& v) {
  Buffer b;
  b.view = v;
  std::int64_t count = 1;
  for (int i = v.ndim - 1; i >= 0; --i) {
    b.view.strides[i] = count * static_cast<std::int64_t>(v.itemsize);
    count *= v.shape[i];
  }
  b.bytes.reset(new std::byte[static_cast<std::size_t>(std::max<std::int64_t>(count, 1)) * v.itemsize]);
  b.view.data = reinterpret_cast<char*>(b.bytes.get());
  b.view.aligned = b.view.writeable = true;
  return b;
}

// Options from the keyword arguments, with messages that name the field.
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

// Whether some kernel the options allow takes `p` (strided) on a runnable ISA: else the call
// copies its tensors to the default layout (e.g. kernel="blocked", which reads only that).
bool kernel_takes(const attune::Problem& p, const attune::Options& opt) {
  const auto takes = [&](const attune::Kernel& kern) {
    for (Isa i : attune::runnable_isas(kern))
      if ((!opt.isa || *opt.isa == i) && kern.supports(p, i)) return true;
    return false;
  };
  if (opt.kernel != "auto") {
    const attune::Kernel* kern = attune::find_kernel(opt.kernel);
    return kern == nullptr || takes(*kern);  // an unknown name gets attune's own error
  }
  for (const attune::Kernel* kern : attune::kernels())
    if (takes(*kern)) return true;
  return false;
}

// The variant arguments of a call, as the Python layer passes them.
struct Variants {
  bool causal = false;
  std::string_view causal_align = "bottom_right";
  std::int64_t window = 0;
  float softcap = 0.0f;
  std::optional<float> scale;
};

// One prepared call: the problem, the arrays (in place or copied), the output object.
struct Call {
  attune::Problem p;
  attune::VariantData data;
  attune::Options opt;
  View q, k, v, out, mask;
  Buffer copies[4];  // q, k, v, out when they could not be read in place
  Buffer mask_copy;
  bool scatter_out = false;
  nb::object result;
};

// Reads the mask (bool: True = visible, float32: added to the logits) broadcastable to
// [batch, heads_q, seq_q, seq_kv] into the problem's planes; gathers it when its planes are not
// contiguous (broadcast query or head axes, e.g. a [batch, 1, 1, seq_kv] padding mask).
void read_mask(Call& c, PyObject* mask, Framework fw, bool run) {
  View& m = c.mask;
  view_of(mask, fw, "mask", true, m);
  attune::Problem& p = c.p;
  const std::int64_t target[4] = {p.batch, p.heads_q, p.seq_q, p.seq_kv};
  if (m.ndim < 2 || m.ndim > 4)
    bad_shape("mask: expected 2-D to 4-D, broadcastable to [batch, heads_q, seq_q, seq_kv], got shape " + shape_text(m));
  // Pad to 4-D with length-1 leading axes; broadcast axes get stride 0.
  View full = m;
  full.ndim = 4;
  const int pad = 4 - m.ndim;
  for (int i = 0; i < 4; ++i) {
    const std::int64_t len = i < pad ? 1 : m.shape[i - pad];
    const std::int64_t stride = i < pad ? 0 : m.strides[i - pad];
    if (len != 1 && len != target[i])
      bad_shape("mask: shape " + shape_text(m) + " does not broadcast to [batch, heads_q, seq_q, seq_kv] = (" +
                std::to_string(target[0]) + ", " + std::to_string(target[1]) + ", " + std::to_string(target[2]) +
                ", " + std::to_string(target[3]) + ")");
    full.shape[i] = target[i];
    full.strides[i] = len == 1 ? 0 : stride;
  }
  const bool per_head = full.strides[1] != 0 && p.heads_q > 1;
  const bool per_batch = full.strides[0] != 0 && p.batch > 1;
  p.mask = m.boolean ? attune::MaskKind::boolean : attune::MaskKind::additive;
  p.mask_broadcast = per_head ? attune::MaskBroadcast::per_head
                     : per_batch ? attune::MaskBroadcast::per_batch
                                 : attune::MaskBroadcast::shared;
  // The planes attune reads: [batch, heads_q] (per head), [batch, 1] or [1, 1], each contiguous.
  View planes = full;
  if (!per_head) planes.shape[1] = 1;
  if (!per_head && !per_batch) planes.shape[0] = 1;
  const auto is = static_cast<std::int64_t>(m.itemsize);
  const std::int64_t plane = p.seq_q * p.seq_kv * is;
  const bool dense = m.aligned && (p.seq_kv == 1 || planes.strides[3] == is) &&
                     (p.seq_q == 1 || planes.strides[2] == p.seq_kv * is) &&
                     (planes.shape[1] == 1 || planes.strides[1] == plane) &&
                     (planes.shape[0] == 1 || planes.strides[0] == planes.shape[1] * plane);
  if (dense) {
    c.data.mask = m.data;
    return;
  }
  c.mask_copy = contiguous_like(planes);
  c.data.mask = c.mask_copy.view.data;
  if (run) {
    copy_view(planes, c.mask_copy.view);
    ++g_mask_copies;
  }
}

// Reads q, k, v (and out, mask) into c: the problem with strides where some tensor is not in the
// default layout, copies where needed. `run`: also allocate the output and fill the copies
// (workspace_bytes() and resolve() only need the problem).
void prepare(Call& c, PyObject* q, PyObject* k, PyObject* v, PyObject* out, PyObject* mask, const Variants& var,
             bool run) {
  Framework fw;
  try {
    fw = framework_of(q);
    if (framework_of(k) != fw || framework_of(v) != fw) throw std::invalid_argument("");
  } catch (const std::invalid_argument&) {
    type_error("q, k, v must be all numpy arrays or all torch tensors, got " + type_name(q) + ", " + type_name(k) +
               ", " + type_name(v));
  }
  view_of(q, fw, "q", false, c.q);
  view_of(k, fw, "k", false, c.k);
  view_of(v, fw, "v", false, c.v);
  if (c.k.dtype != c.v.dtype) type_error("k and v must have the same element type");
  attune::Problem& p = c.p;
  p = problem_of(c.q, c.k, c.v);
  p.causal = var.causal;
  if (var.causal_align == "bottom_right") {
    p.causal_align = attune::CausalAlign::bottom_right;
  } else if (var.causal_align == "top_left") {
    p.causal_align = attune::CausalAlign::top_left;
  } else {
    bad_shape("causal_align: must be 'bottom_right' or 'top_left', got '" + std::string(var.causal_align) + "'");
  }
  if (var.window < 0) bad_shape("window: must be >= 0 (0: no window), got " + std::to_string(var.window));
  p.window = var.window;
  p.softcap = var.softcap;
  p.scale = var.scale;

  // The output: the caller's (same framework and type, q's shape with d_v, rows contiguous) or new.
  if (out != Py_None) {
    const bool ok = fw == Framework::numpy ? PyArray_Check(out) : PyObject_TypeCheck(out, g_torch.tensor);
    if (!ok) type_error(fw == Framework::numpy ? "out: must be a numpy array like q" : "out: must be a CPU torch tensor like q");
    try {
      view_of(out, fw, "out", false, c.out);
    } catch (const TypeError&) {
      type_error("out: element type must be q's");
    }
    if (c.out.dtype != c.q.dtype) type_error("out: element type must be q's");
    bool shape_ok = c.out.ndim == c.q.ndim;
    for (int i = 0; shape_ok && i < c.q.ndim; ++i)
      shape_ok = c.out.shape[i] == (i + 1 == c.q.ndim ? p.d_v : c.q.shape[i]);
    if (!shape_ok) {
      View want = c.q;
      want.shape[want.ndim - 1] = p.d_v;
      bad_shape("out: shape must be " + shape_text(want) + " (q's, last axis d_v), got " + shape_text(c.out));
    }
    if (!c.out.writeable) bad_shape("out: must be a writeable array");
    for (int i = 0; i < c.out.ndim; ++i)
      if (c.out.shape[i] > 1 && c.out.strides[i] == 0) bad_shape("out: must not have zero strides (rows would overlap)");
    if (run) c.result = nb::borrow(out);
  } else if (run) {
    c.out = c.q;
    c.out.shape[c.q.ndim - 1] = p.d_v;
    std::int64_t count = 1;
    for (int i = c.q.ndim - 1; i >= 0; --i) {
      c.out.strides[i] = count * static_cast<std::int64_t>(c.q.itemsize);
      count *= c.out.shape[i];
    }
    c.out.writeable = c.out.aligned = true;
    if (fw == Framework::numpy) {
      npy_intp dims[kMaxDims];
      for (int i = 0; i < c.out.ndim; ++i) dims[i] = c.out.shape[i];
      PyArray_Descr* descr;  // a new reference, which PyArray_Empty steals
      if (c.q.dtype == Dtype::bf16) {
        descr = g_np_bf16;
        Py_INCREF(descr);
      } else {
        descr = PyArray_DescrFromType(c.q.dtype == Dtype::fp32 ? NPY_FLOAT32 : NPY_FLOAT16);
      }
      PyObject* a = PyArray_Empty(c.out.ndim, dims, descr, 0);
      if (!a) throw nb::python_error();
      c.result = nb::steal(a);
      c.out.data = static_cast<char*>(PyArray_DATA(reinterpret_cast<PyArrayObject*>(a)));
    } else if (p.d_v == p.d_k && same_strides(c.out, c.q)) {
      // torch.empty_like(q): ~0.9 us where torch.empty(shape, dtype=) parses keywords for ~1.5 us
      // (q's exact strides are the contiguous ones here, which empty_like keeps).
      PyObject* t = PyObject_CallOneArg(g_torch.empty_like, q);
      if (!t) throw nb::python_error();
      c.result = nb::steal(t);
      c.out.data = static_cast<char*>(PyLong_AsVoidPtr(nb::steal(call0(t, s_data_ptr)).ptr()));
    } else {
      PyObject* shape = PyTuple_New(c.out.ndim);
      for (int i = 0; i < c.out.ndim; ++i) PyTuple_SET_ITEM(shape, i, PyLong_FromLongLong(c.out.shape[i]));
      PyObject* dtype = c.q.dtype == Dtype::fp32 ? g_torch.f32 : c.q.dtype == Dtype::fp16 ? g_torch.f16 : g_torch.bf16;
      PyObject* args[] = {nullptr, shape, dtype};
      PyObject* t = PyObject_Vectorcall(g_torch.empty, args + 1, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, s_dtype_kwnames);
      Py_DECREF(shape);
      if (!t) throw nb::python_error();
      c.result = nb::steal(t);
      c.out.data = static_cast<char*>(PyLong_AsVoidPtr(nb::steal(call0(t, s_data_ptr)).ptr()));
    }
  } else {
    c.out = c.q;  // shape-only: a contiguous output
    c.out.shape[c.q.ndim - 1] = p.d_v;
    c.out.strides[c.q.ndim - 1] = static_cast<std::int64_t>(c.q.itemsize);
    for (int i = c.q.ndim - 2; i >= 0; --i) c.out.strides[i] = c.out.strides[i + 1] * c.out.shape[i + 1];
  }

  if (mask != Py_None) {
    const bool ok = fw == Framework::numpy ? PyArray_Check(mask) : PyObject_TypeCheck(mask, g_torch.tensor);
    if (!ok) type_error("mask: must be of q's framework (a numpy array or a torch tensor), got " + type_name(mask));
    read_mask(c, mask, fw, run);
  }

  // Strides: in place where the rows allow it and some tensor is not in the default layout.
  View* views[4] = {&c.q, &c.k, &c.v, &c.out};
  const std::int64_t heads[4] = {p.heads_q, p.heads_kv, p.heads_kv, p.heads_q};
  const std::int64_t seqs[4] = {p.seq_q, p.seq_kv, p.seq_kv, p.seq_q};
  const std::int64_t dims[4] = {p.d_k, p.d_k, p.d_v, p.d_v};
  attune::Strides* strides[4] = {&c.data.q_strides, &c.data.k_strides, &c.data.v_strides, &c.data.out_strides};
  bool copy[4] = {}, any_strided = false;
  for (int i = 0; i < 4; ++i) {
    const auto contiguous = attune::Strides::contiguous(heads[i], seqs[i], dims[i]);
    const auto s = row_strides(*views[i]);
    copy[i] = !s;
    *strides[i] = s ? *s : contiguous;
    any_strided |= s && !same(*s, contiguous);
  }
  if (any_strided) {
    p.strided = true;
    if (!kernel_takes(p, c.opt)) {  // the kernel reads the default layout only: copy them all
      p.strided = false;
      for (int i = 0; i < 4; ++i) copy[i] |= !same(*strides[i], attune::Strides::contiguous(heads[i], seqs[i], dims[i]));
    }
  }
  for (int i = 0; i < 4; ++i) {
    if (!copy[i]) continue;
    c.copies[i] = contiguous_like(*views[i]);
    *strides[i] = attune::Strides::contiguous(heads[i], seqs[i], dims[i]);
  }
  // Problems whose every tensor ended up contiguous are plain again (the fast kernels' path).
  if (p.strided) {
    bool all = true;
    for (int i = 0; i < 4; ++i) all &= same(*strides[i], attune::Strides::contiguous(heads[i], seqs[i], dims[i]));
    p.strided = !all;
  }
  c.scatter_out = copy[3];
}

// Copies (GIL released), the call, the scatter of an output computed into a temporary.
void execute(Call& c) {
  for (int i = 0; i < 3; ++i) {
    if (!c.copies[i].bytes) continue;
    View* from = i == 0 ? &c.q : i == 1 ? &c.k : &c.v;
    copy_view(*from, c.copies[i].view);
    ++g_copies;
  }
  const void* q = c.copies[0].bytes ? c.copies[0].view.data : c.q.data;
  const void* k = c.copies[1].bytes ? c.copies[1].view.data : c.k.data;
  const void* v = c.copies[2].bytes ? c.copies[2].view.data : c.v.data;
  void* out = c.copies[3].bytes ? c.copies[3].view.data : c.out.data;
  if (c.p.plain() && !c.p.strided && c.p.mask == attune::MaskKind::none) {
    attune::attention(c.p, q, k, v, out, c.opt);
  } else {
    attune::attention(c.p, q, k, v, out, c.data, c.opt);
  }
  if (c.scatter_out) {
    copy_view(c.copies[3].view, c.out);
    ++g_copies;
  }
}

// prepare(), a check of the problem, then the copies and the call with the GIL released.
void no_check(const attune::Problem&) {}

template <class Check = void (*)(const attune::Problem&)>
nb::object run(Call& c, nb::handle q, nb::handle k, nb::handle v, nb::handle out, nb::handle mask, const Variants& var,
               Check check = no_check) {
  prepare(c, q.ptr(), k.ptr(), v.ptr(), out.ptr(), mask.ptr(), var, true);
  check(c.p);
  {
    nb::gil_scoped_release release;
    execute(c);
  }
  return std::move(c.result);
}

// attune.attention itself: the keyword arguments are matched by nanobind and converted here, so
// the call runs no Python code (a Python wrapper with 17 keyword parameters cost ~0.35 us of a
// ~3 us tiny call, bench/python_bench.py); wrong types get one-line messages naming the argument.
std::string repr_of(nb::handle h) { return nb::cast<std::string>(nb::repr(h)); }

bool is_int(nb::handle h) { return PyLong_Check(h.ptr()) && !PyBool_Check(h.ptr()); }

std::int64_t count_arg(nb::handle h, const char* name) {
  if (!is_int(h)) type_error(std::string(name) + ": must be an int, got " + repr_of(h));
  const long long value = PyLong_AsLongLong(h.ptr());
  if (value == -1 && PyErr_Occurred()) throw nb::python_error();
  if (value < 0) bad_shape(std::string(name) + ": must be >= 0 (0: the default), got " + std::to_string(value));
  return value;
}

float float_arg(nb::handle h, const char* name) {
  const double value = PyFloat_AsDouble(h.ptr());  // floats, ints, numpy and torch scalars
  if (value == -1.0 && PyErr_Occurred()) {
    PyErr_Clear();
    type_error(std::string(name) + ": must be a float, got " + repr_of(h));
  }
  return static_cast<float>(value);
}

std::string_view str_arg(nb::handle h, const char* what) {
  if (!PyUnicode_Check(h.ptr())) type_error(std::string(what) + ", got " + repr_of(h));
  Py_ssize_t n = 0;
  const char* text = PyUnicode_AsUTF8AndSize(h.ptr(), &n);
  if (!text) throw nb::python_error();
  return {text, static_cast<std::size_t>(n)};
}

nb::object attention_call(nb::handle q, nb::handle k, nb::handle v, nb::handle causal, nb::handle scale,
                          nb::handle kernel, nb::handle isa, nb::handle threads, nb::handle block_q,
                          nb::handle block_kv, nb::handle kv_splits, nb::handle max_memory, nb::handle out,
                          nb::handle causal_align, nb::handle window, nb::handle softcap, nb::handle mask) {
  std::optional<std::string> isa_name;
  if (!isa.is_none()) isa_name = std::string(str_arg(isa, "isa: must be an ISA name (str) or None"));
  std::optional<int> nthreads;
  if (!threads.is_none()) {
    if (!is_int(threads)) type_error("threads: must be an int or None, got " + repr_of(threads));
    const long long t = PyLong_AsLongLong(threads.ptr());
    if (t < 1) bad_shape("threads: must be >= 1 (or None for all cores), got " + repr_of(threads));
    nthreads = static_cast<int>(std::min<long long>(t, std::numeric_limits<int>::max()));
  }
  Call c;
  c.opt = options_of(std::string(str_arg(kernel, "kernel: must be a kernel name (str)")), isa_name, nthreads,
                     count_arg(block_q, "block_q"), count_arg(block_kv, "block_kv"),
                     static_cast<int>(std::min<std::int64_t>(count_arg(kv_splits, "kv_splits"), std::numeric_limits<int>::max())),
                     static_cast<std::size_t>(count_arg(max_memory, "max_memory")));
  Variants var;
  const int truth = PyObject_IsTrue(causal.ptr());
  if (truth < 0) throw nb::python_error();
  var.causal = truth != 0;
  var.causal_align = str_arg(causal_align, "causal_align: must be 'bottom_right' or 'top_left'");
  if (!is_int(window)) type_error("window: must be an int, got " + repr_of(window));
  var.window = PyLong_AsLongLong(window.ptr());
  var.softcap = float_arg(softcap, "softcap");
  if (!scale.is_none()) var.scale = float_arg(scale, "scale");
  return run(c, q, k, v, out, mask, var);
}

// attune.torch.sdpa's eager call: torch's SDPA conventions (top-left is_causal, heads_q == heads_kv
// unless enable_gqa) on the default options. Returns None when autograd would record the call
// (grad mode on and an input requiring grad): the caller then runs the registered op, whose
// backward raises. These checks cost ~1 us a call as Python code, reading the same attributes.
nb::object sdpa_call(nb::handle q, nb::handle k, nb::handle v, nb::handle mask, bool is_causal,
                     std::optional<float> scale, bool enable_gqa) {
  if (have_torch() && PyObject_TypeCheck(q.ptr(), g_torch.tensor)) {
    nb::object grad = nb::steal(PyObject_CallNoArgs(g_torch.is_grad_enabled));
    if (!grad.is_valid()) throw nb::python_error();
    if (grad.ptr() == Py_True) {
      for (nb::handle t : {q, k, v}) {
        if (!PyObject_TypeCheck(t.ptr(), g_torch.tensor)) continue;  // attune's own error below
        nb::object rg = nb::steal(get(t.ptr(), s_requires_grad));
        if (rg.ptr() == Py_True) return nb::none();
      }
    }
  }
  Call c;
  Variants var;
  var.causal = is_causal;
  var.causal_align = "top_left";
  var.scale = scale;
  return run(c, q, k, v, nb::none(), mask, var, [&](const attune::Problem& p) {
    if (!enable_gqa && p.heads_q != p.heads_kv)
      bad_shape("attune.torch.sdpa: query has " + std::to_string(p.heads_q) + " heads and key " +
                std::to_string(p.heads_kv) + "; grouped-query attention needs enable_gqa=True (as in torch's SDPA)");
  });
}

constexpr const char* kAttentionDoc = R"(softmax(scale * q k^T + mask) v for numpy arrays or CPU torch tensors.

q [batch, heads_q, seq_q, d_k] (or 3-D without batch), k [.., heads_kv, seq_kv, d_k],
v [.., heads_kv, seq_kv, d_v]; heads_q a multiple of heads_kv (grouped-query attention).
Any strides whose rows (the last axis) are contiguous are read in place; other layouts are
copied first. Element types: float32, float16, bfloat16 (numpy: ml_dtypes.bfloat16); k and v
share one, q may differ (a 16-bit KV cache with float32 queries). The result has q's type and
framework (a new C-contiguous array, or `out`: q's type and the output's shape, any strides;
rows that are not contiguous go through a temporary).
causal: query i sees keys j <= i' with i' = i + seq_kv - seq_q (causal_align="bottom_right",
the default: the last query meets the last key, as decoding with a KV cache needs) or i' = i
("top_left", torch's is_causal). window: sliding window width (0: off; with causal the keys
(i' - window, i'], else (i' - window, i' + window)). softcap: logits s -> softcap tanh(s / softcap)
(0: off). mask: bool (True: visible) or float32 (added to the logits), broadcastable to
[batch, heads_q, seq_q, seq_kv], of q's framework. scale defaults to 1/sqrt(d_k). A row that
sees no key outputs zeros.
kernel: a name from kernels() or "auto"; isa: an ISA name from info()["isa_runnable"];
threads: worker threads (None: all cores). block_q, block_kv, kv_splits: tile overrides
(0: default). max_memory: working-memory limit in bytes (0: the ATTUNE_MAX_MEMORY environment
variable, else half the physical memory); above it MemoryError.
Raises ValueError for bad shapes or options, TypeError for wrong types or devices.)";

// For bench/python_bench.py: seconds per call of the C++ API itself on these arrays and options,
// timed in C++ (`calls` back-to-back calls, GIL released), so the Python call's overhead can be
// measured against it in the same process and the same minute.
double time_cpp_calls(nb::handle q, nb::handle k, nb::handle v, nb::handle out, const std::string& kernel,
                      std::optional<int> threads, int calls) {
  Call c;
  c.opt = options_of(kernel, std::nullopt, threads, 0, 0, 0, 0);
  prepare(c, q.ptr(), k.ptr(), v.ptr(), out.ptr(), Py_None, Variants{}, true);
  nb::gil_scoped_release release;
  execute(c);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < calls; ++i) attune::attention(c.p, c.q.data, c.k.data, c.v.data, c.out.data, c.opt);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / std::max(calls, 1);
}

std::size_t workspace_bytes(nb::handle q, nb::handle k, nb::handle v, nb::handle mask, bool causal,
                            std::string_view causal_align, std::int64_t window, float softcap,
                            std::optional<float> scale, const std::string& kernel, const std::optional<std::string>& isa,
                            std::optional<int> threads, std::int64_t block_q, std::int64_t block_kv, int kv_splits) {
  Call c;
  c.opt = options_of(kernel, isa, threads, block_q, block_kv, kv_splits, 0);
  prepare(c, q.ptr(), k.ptr(), v.ptr(), Py_None, mask.ptr(), Variants{causal, causal_align, window, softcap, scale}, false);
  return attune::workspace_bytes(c.p, c.opt);
}

nb::dict resolve(nb::handle q, nb::handle k, nb::handle v, nb::handle mask, bool causal, std::string_view causal_align,
                 std::int64_t window, float softcap, std::optional<float> scale, const std::string& kernel,
                 const std::optional<std::string>& isa, std::optional<int> threads, std::int64_t block_q,
                 std::int64_t block_kv, int kv_splits) {
  Call c;
  c.opt = options_of(kernel, isa, threads, block_q, block_kv, kv_splits, 0);
  prepare(c, q.ptr(), k.ptr(), v.ptr(), Py_None, mask.ptr(), Variants{causal, causal_align, window, softcap, scale}, false);
  const attune::Choice ch = attune::resolve(c.p, c.opt);
  nb::dict d;
  d["kernel"] = std::string(ch.kernel->name());
  d["isa"] = std::string(attune::to_string(ch.isa));
  d["block_q"] = ch.config.block_q;
  d["block_kv"] = ch.config.block_kv;
  d["threads"] = ch.config.threads;
  d["kv_splits"] = ch.config.kv_splits;
  d["micro"] = ch.config.micro;
  d["strided"] = c.p.strided;
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
  const attune::MachineSignature& ms = attune::machine_signature();
  nb::dict machine;
  machine["cpu"] = ms.cpu;
  machine["isas"] = ms.isas;
  machine["cores"] = ms.cores;
  machine["l1d"] = ms.l1d;
  machine["l2"] = ms.l2;
  machine["l3"] = ms.l3;
  d["machine"] = machine;
  d["build_signature"] = attune::build_signature();
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

void register_bfloat16(nb::handle dtype) {
  PyArray_Descr* d = nullptr;
  if (!PyArray_DescrConverter(dtype.ptr(), &d)) throw nb::python_error();
  Py_XDECREF(g_np_bf16);
  g_np_bf16 = d;  // kept for the module's lifetime
}

PyObject* intern(const char* s) { return PyUnicode_InternFromString(s); }

}  // namespace

NB_MODULE(_attune, m) {
  if (_import_array() < 0) throw nb::python_error();
  s_is_cpu = intern("is_cpu");
  s_dtype = intern("dtype");
  s_shape = intern("shape");
  s_stride = intern("stride");
  s_data_ptr = intern("data_ptr");
  s_device = intern("device");
  s_requires_grad = intern("requires_grad");
  s_dtype_kwnames = PyTuple_Pack(1, s_dtype);  // ("dtype",): torch.empty's keyword
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
    } catch (const TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    }
  });
  m.def("workspace_bytes", &workspace_bytes, "q"_a, "k"_a, "v"_a, "mask"_a.none(), "causal"_a, "causal_align"_a,
        "window"_a, "softcap"_a, "scale"_a.none(), "kernel"_a, "isa"_a.none(), "threads"_a.none(), "block_q"_a,
        "block_kv"_a, "kv_splits"_a);
  m.def("resolve", &resolve, "q"_a, "k"_a, "v"_a, "mask"_a.none(), "causal"_a, "causal_align"_a, "window"_a,
        "softcap"_a, "scale"_a.none(), "kernel"_a, "isa"_a.none(), "threads"_a.none(), "block_q"_a, "block_kv"_a,
        "kv_splits"_a);
  m.def("attention", &attention_call, "q"_a, "k"_a, "v"_a, nb::kw_only(), "causal"_a = false,
        "scale"_a.none() = nb::none(), "kernel"_a = "auto", "isa"_a.none() = nb::none(),
        "threads"_a.none() = nb::none(), "block_q"_a = 0, "block_kv"_a = 0, "kv_splits"_a = 0, "max_memory"_a = 0,
        "out"_a.none() = nb::none(), "causal_align"_a = "bottom_right", "window"_a = 0, "softcap"_a = 0.0,
        "mask"_a.none() = nb::none(), kAttentionDoc);
  m.def("_sdpa", &sdpa_call, "q"_a, "k"_a, "v"_a, "mask"_a.none(), "is_causal"_a, "scale"_a.none(), "enable_gqa"_a);
  m.def("_time_cpp_calls", &time_cpp_calls, "q"_a, "k"_a, "v"_a, "out"_a, "kernel"_a, "threads"_a.none(), "calls"_a);
  m.def("_copies", [] { return nb::make_tuple(g_copies.load(), g_mask_copies.load()); },
        "(tensors, masks) gathered into contiguous copies so far (for the tests)");
  m.def("_register_bfloat16", &register_bfloat16, "dtype"_a);
  m.def("kernels", &kernels);
  m.def("info", &info);
  m.def("load_tuning", [](const std::string& paths) { return attune::load_tuning(paths); }, "paths"_a);
  m.def("default_tuning_path", &attune::default_tuning_path);
  m.def(
      "set_tuning",
      [](const std::string& mode, double budget_ms, const std::string& save) {
        if (mode != "online" && mode != "table")
          throw nb::value_error(("set_tuning: mode '" + mode + "' must be 'online' or 'table'").c_str());
        if (!(budget_ms > 0)) throw nb::value_error("set_tuning: budget_ms must be > 0");
        attune::set_tuning(mode == "online" ? attune::TuningMode::online : attune::TuningMode::table,
                           attune::OnlineTuning{budget_ms, save});
      },
      "mode"_a, "budget_ms"_a = 200.0, "save"_a = "");
  m.def("tuning_mode", [] { return attune::tuning_mode() == attune::TuningMode::online ? "online" : "table"; });
  m.def("online_tuning_stats", [] {
    const attune::OnlineStats s = attune::online_tuning_stats();
    nb::dict d;
    d["races"] = s.races;
    d["candidates"] = s.candidates;
    d["rejected"] = s.rejected;
    d["changed"] = s.changed;
    d["total_ms"] = s.total_ms;
    d["max_ms"] = s.max_ms;
    return d;
  });
#ifdef ATTUNE_WITH_BLAS
  m.def("mha", &mha, "x"_a, "wq"_a, "wk"_a, "wv"_a, "wo"_a, "y"_a, "heads_q"_a, "heads_kv"_a.none(), "causal"_a,
        "scale"_a.none(), "kernel"_a, "isa"_a.none(), "threads"_a.none(), "max_workspace_bytes"_a);
#endif
}
