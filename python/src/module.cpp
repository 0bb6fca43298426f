// attune._attune: the nanobind bindings under the Python package. One call reads numpy arrays
// (numpy's C API: fields of the array struct, no DLPack capsule) or torch CPU tensors (data_ptr,
// shape, stride through the C API, no DLPack) into an attune::Problem with their strides, allocates
// the output, runs attune::attention with the GIL released, and turns attune's exceptions into
// Python's (InvalidArgument -> ValueError, MemoryError -> MemoryError). Tensors whose rows are not
// contiguous, or that the chosen kernel cannot read strided, are gathered into contiguous copies
// here (counted: _copies()), everything else is read in place. paged_attention / paged_append read
// and write a paged KV cache's pools (vLLM's block tables) in place, never copied.
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
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
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
  PyObject *int8 = nullptr, *uint8 = nullptr, *int32 = nullptr, *int64 = nullptr;
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
  g_torch.int8 = nb::object(torch.attr("int8")).release().ptr();
  g_torch.uint8 = nb::object(torch.attr("uint8")).release().ptr();
  g_torch.int32 = nb::object(torch.attr("int32")).release().ptr();
  g_torch.int64 = nb::object(torch.attr("int64")).release().ptr();
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

// What an array may hold: attention tensors (float32, float16, bfloat16), a mask (bool or
// float32), or quantized K/V codes (int8 or uint8 bytes, read as the kv_dtype the call names).
enum class Elements : std::uint8_t { floats, mask, codes };

[[noreturn]] void element_error(const char* name, Elements kind, const std::string& got, bool byte_type) {
  const char* want = kind == Elements::mask    ? ": element type must be bool or float32"
                     : kind == Elements::codes ? ": with kv_dtype, must hold the quantized codes as int8 or uint8 "
                                                 "(attune.quantize_kv)"
                                               : ": element type must be float32, float16 or bfloat16";
  const char* hint = kind == Elements::floats && byte_type ? " (quantized codes need kv_dtype=...)" : "";
  type_error(std::string(name) + want + ", got " + got + hint);
}

// A numpy array as a View, of the element types `kind` allows.
void numpy_view(PyObject* o, const char* name, Elements kind, View& v) {
  auto* a = reinterpret_cast<PyArrayObject*>(o);
  v.ndim = PyArray_NDIM(a);
  if (v.ndim > kMaxDims) bad_shape(std::string(name) + ": expected at most 4 dimensions, got " + std::to_string(v.ndim));
  const int t = PyArray_TYPE(a);
  if (kind == Elements::mask && t == NPY_BOOL) {
    v.boolean = true;
    v.itemsize = 1;
  } else if (kind == Elements::codes) {
    if (t != NPY_INT8 && t != NPY_UINT8)
      element_error(name, kind, "numpy " + str_of(reinterpret_cast<PyObject*>(PyArray_DESCR(a))), false);
    v.itemsize = 1;  // the caller sets dtype to the kv_dtype
  } else if (t == NPY_FLOAT32) {
    v.dtype = Dtype::fp32;
    v.itemsize = 4;
  } else if (kind == Elements::floats && t == NPY_FLOAT16) {
    v.dtype = Dtype::fp16;
    v.itemsize = 2;
  } else if (kind == Elements::floats && g_np_bf16 && PyArray_DESCR(a)->typeobj == g_np_bf16->typeobj) {
    v.dtype = Dtype::bf16;
    v.itemsize = 2;
  } else {
    element_error(name, kind, "numpy " + str_of(reinterpret_cast<PyObject*>(PyArray_DESCR(a))),
                  t == NPY_INT8 || t == NPY_UINT8);
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

void torch_view(PyObject* o, const char* name, Elements kind, View& v) {
  nb::object is_cpu = nb::steal(get(o, s_is_cpu));
  if (is_cpu.ptr() != Py_True) {
    nb::object dev = nb::steal(get(o, s_device));
    type_error(std::string(name) + ": attune runs on the CPU, got a tensor on device '" + str_of(dev.ptr()) + "'");
  }
  nb::object dt = nb::steal(get(o, s_dtype));
  const PyObject* d = dt.ptr();
  if (kind == Elements::mask && d == g_torch.boolean) {
    v.boolean = true;
    v.itemsize = 1;
  } else if (kind == Elements::codes) {
    if (d != g_torch.int8 && d != g_torch.uint8) element_error(name, kind, str_of(dt.ptr()), false);
    v.itemsize = 1;
  } else if (d == g_torch.f32) {
    v.dtype = Dtype::fp32;
    v.itemsize = 4;
  } else if (kind == Elements::floats && d == g_torch.f16) {
    v.dtype = Dtype::fp16;
    v.itemsize = 2;
  } else if (kind == Elements::floats && d == g_torch.bf16) {
    v.dtype = Dtype::bf16;
    v.itemsize = 2;
  } else {
    element_error(name, kind, str_of(dt.ptr()), d == g_torch.int8 || d == g_torch.uint8);
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

void view_of(PyObject* o, Framework fw, const char* name, Elements kind, View& v) {
  if (fw == Framework::numpy) {
    numpy_view(o, name, kind, v);
  } else {
    torch_view(o, name, kind, v);
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
  // Elements of a row: int4 codes pack two in a byte.
  const auto elements = [&](const View& x) { return x.shape[o + 2] * (x.dtype == Dtype::int4 ? 2 : 1); };
  p.heads_kv = k.shape[o];
  p.seq_kv = k.shape[o + 1];
  p.d_v = elements(v);
  if (n == 4 && (k.shape[0] != p.batch || v.shape[0] != p.batch)) bad_shape("batch: q, k and v must agree on axis 0, got shapes " + all());
  if (elements(k) != p.d_k)
    bad_shape("d_k: q and k must agree on the last axis" +
              std::string(k.dtype == Dtype::int4 ? " (int4 codes: d_k / 2 bytes a row)" : "") + ", got shapes " + all());
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

// The variant arguments of a call, as the Python layer passes them (arrays as the caller's
// objects, None when absent).
struct Variants {
  bool causal = false;
  std::string_view causal_align = "bottom_right";
  std::int64_t window = 0;
  float softcap = 0.0f;
  std::optional<float> scale;
  std::int64_t top_k = 0;
  PyObject* alibi_slopes = Py_None;  // [heads_q] floats
  PyObject* sinks = Py_None;         // [heads_q] floats
  PyObject* cu_seqlens_q = Py_None;  // [sequences + 1] ints (varlen)
  PyObject* cu_seqlens_kv = Py_None;
  std::optional<Dtype> kv_dtype;     // k and v are codes of this quantized type
  PyObject* k_scales = Py_None;
  PyObject* v_scales = Py_None;
};

// One prepared call: the problem, the arrays (in place or copied), the output object.
struct Call {
  attune::Problem p;
  attune::VariantData data;
  attune::Options opt;
  View q, k, v, out, mask;
  Buffer copies[4];  // q, k, v, out when they could not be read in place
  Buffer mask_copy;
  // Per-head and per-sequence arrays converted from lists or other element types, and K/V scales
  // given as one number (fp8) or gathered into contiguous arrays.
  std::vector<float> slopes, sinks, fp8_scales[2];
  std::vector<std::int64_t> cu_q, cu_kv;
  std::vector<std::int32_t> table;  // a paged call's block table converted to int32
  Buffer scale_copies[2];
  bool scatter_out = false;
  nb::object result;
};

std::string repr_of(nb::handle h) { return nb::cast<std::string>(nb::repr(h)); }

// A per-head (alibi_slopes, sinks: float) or per-sequence (cu_seqlens: int) argument: a 1-D numpy
// array or CPU tensor already of T is read in place; lists, tuples and other element types are
// converted into `storage` (these arrays hold a few dozen numbers). Returns the data and count.
template <class T>
std::pair<const T*, std::int64_t> small_array(PyObject* o, const char* name, std::vector<T>& storage) {
  constexpr bool floats = std::is_same_v<T, float>;
  bool array = true;  // a 1-D numpy array or CPU tensor (converted below if not of T)
  if (PyArray_Check(o)) {
    auto* a = reinterpret_cast<PyArrayObject*>(o);
    if (PyArray_NDIM(a) != 1)
      bad_shape(std::string(name) + ": expected a 1-D array, got " + std::to_string(PyArray_NDIM(a)) + " dimensions");
    if (PyArray_TYPE(a) == (floats ? NPY_FLOAT32 : NPY_INT64) && PyArray_IS_C_CONTIGUOUS(a) && PyArray_ISALIGNED(a) &&
        PyArray_ISNOTSWAPPED(a))
      return {static_cast<const T*>(PyArray_DATA(a)), PyArray_DIMS(a)[0]};
  } else if (have_torch() && PyObject_TypeCheck(o, g_torch.tensor)) {
    nb::object is_cpu = nb::steal(get(o, s_is_cpu));
    if (is_cpu.ptr() != Py_True) {
      nb::object dev = nb::steal(get(o, s_device));
      type_error(std::string(name) + ": attune runs on the CPU, got a tensor on device '" + str_of(dev.ptr()) + "'");
    }
    nb::object shape = nb::steal(get(o, s_shape));
    if (PyTuple_GET_SIZE(shape.ptr()) != 1)
      bad_shape(std::string(name) + ": expected a 1-D tensor, got " + std::to_string(PyTuple_GET_SIZE(shape.ptr())) +
                " dimensions");
    nb::object dt = nb::steal(get(o, s_dtype));
    nb::object strides = nb::steal(call0(o, s_stride));
    const std::int64_t n = PyLong_AsLongLong(PyTuple_GET_ITEM(shape.ptr(), 0));
    if (dt.ptr() == (floats ? g_torch.f32 : g_torch.int64) && (n <= 1 || PyLong_AsLongLong(PyTuple_GET_ITEM(strides.ptr(), 0)) == 1)) {
      nb::object ptr = nb::steal(call0(o, s_data_ptr));
      return {static_cast<const T*>(PyLong_AsVoidPtr(ptr.ptr())), n};
    }
  } else {
    array = false;
  }
  const char* want = floats ? "floats" : "ints";
  // Sequences only: a set or an iterator has no order to index heads or sequences by.
  nb::object seq = nb::steal(array || PySequence_Check(o) ? PySequence_Fast(o, "") : nullptr);
  if (!seq.is_valid()) {
    PyErr_Clear();
    type_error(std::string(name) + ": must be a 1-D array or a sequence of " + want + ", got " + repr_of(o));
  }
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq.ptr());
  storage.resize(static_cast<std::size_t>(n));
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* item = PySequence_Fast_GET_ITEM(seq.ptr(), i);
    bool ok;
    if constexpr (floats) {
      const double x = PyFloat_AsDouble(item);
      ok = !(x == -1.0 && PyErr_Occurred());
      storage[static_cast<std::size_t>(i)] = static_cast<float>(x);
    } else {
      nb::object index = nb::steal(PyNumber_Index(item));
      long long x = -1;
      if (index.is_valid()) x = PyLong_AsLongLong(index.ptr());
      ok = !(x == -1 && PyErr_Occurred());
      storage[static_cast<std::size_t>(i)] = x;
    }
    if (!ok) {
      PyErr_Clear();
      type_error(std::string(name) + ": must be a 1-D array or a sequence of " + want + ", got " + repr_of(item) +
                 " at index " + std::to_string(i));
    }
  }
  return {storage.data(), n};
}

// alibi_slopes, sinks (one float per query head), cu_seqlens_q/kv (varlen offsets) and top_k
// into the problem and its VariantData; the library checks their values (finite, non-decreasing).
void read_variant_arrays(Call& c, const Variants& var) {
  attune::Problem& p = c.p;
  const auto per_head = [&](PyObject* o, const char* name, std::vector<float>& storage) -> const float* {
    if (o == Py_None) return nullptr;
    const auto [data, n] = small_array(o, name, storage);
    if (n != p.heads_q)
      bad_shape(std::string(name) + ": expected one value per query head (heads_q = " + std::to_string(p.heads_q) +
                "), got " + std::to_string(n));
    return data;
  };
  c.data.alibi_slopes = per_head(var.alibi_slopes, "alibi_slopes", c.slopes);
  c.data.sinks = per_head(var.sinks, "sinks", c.sinks);
  p.alibi = c.data.alibi_slopes != nullptr;
  p.sinks = c.data.sinks != nullptr;
  if (var.top_k < 0) bad_shape("top_k: must be >= 0 (0: off), got " + std::to_string(var.top_k));
  p.top_k = var.top_k;
  if ((var.cu_seqlens_q == Py_None) != (var.cu_seqlens_kv == Py_None))
    bad_shape("cu_seqlens_q and cu_seqlens_kv go together (varlen: both or neither)");
  if (var.cu_seqlens_q == Py_None) return;
  const auto [cu_q, nq] = small_array(var.cu_seqlens_q, "cu_seqlens_q", c.cu_q);
  const auto [cu_kv, nkv] = small_array(var.cu_seqlens_kv, "cu_seqlens_kv", c.cu_kv);
  if (nq < 2 || nq != nkv)
    bad_shape("cu_seqlens_q and cu_seqlens_kv: expected the same number (>= 2) of offsets, one per sequence boundary, got " +
              std::to_string(nq) + " and " + std::to_string(nkv));
  if (p.batch != 1)
    bad_shape("cu_seqlens_q: varlen packs the sequences along seq: q, k and v must be 3-D or have batch 1, got batch " +
              std::to_string(p.batch));
  p.sequences = nq - 1;
  c.data.cu_seqlens_q = cu_q;
  c.data.cu_seqlens_kv = cu_kv;
}

// The shape of a quantized K's (is_k) or V's scale array (docs/quantized-kv.md), with a batch axis
// when the tensors have one.
std::vector<std::int64_t> scale_shape(const attune::Problem& p, bool is_k, bool batch_axis) {
  const Dtype kv = p.kv_type();
  if (kv == Dtype::fp8_e4m3 || kv == Dtype::fp8_e5m2) return {p.heads_kv};
  std::vector<std::int64_t> shape;
  if (batch_axis) shape.push_back(p.batch);
  shape.push_back(p.heads_kv);
  shape.push_back(kv == Dtype::int8_kc && is_k ? p.d_k : p.seq_kv);
  if (kv == Dtype::int4) {
    shape.push_back((is_k ? p.d_k : p.d_v) / 32);
    shape.push_back(2);
  }
  return shape;
}

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

bool is_dense(const View& v) {
  std::int64_t stride = static_cast<std::int64_t>(v.itemsize);
  for (int i = v.ndim - 1; i >= 0; --i) {
    if (v.shape[i] != 1 && v.strides[i] != stride) return false;
    stride *= v.shape[i];
  }
  return v.aligned;
}

// k_scales and v_scales of a quantized K/V: the documented shapes, float32 (int4: float16); fp8
// also takes one number for every head (vLLM's per-tensor k_scale / v_scale: a float, or a 0-d or
// one-element float32 array). Contiguous arrays are read in place, and so are per-token arrays
// whose records are strided by whole records with consecutive tokens adjacent (the scales of a
// cache with spare capacity, sliced: KvScales::RecordStrides); others are gathered (they hold 1/d
// of the codes' bytes). `run`: also checked (finite, non-zero) by attune::check_kv_scales, on every
// call, one (batch, KV head) row at a time (the attention reads d times more bytes of codes).
void read_kv_scales(Call& c, const Variants& var, Framework fw, bool run) {
  const attune::Problem& p = c.p;
  const Dtype kv = p.kv_type();
  const bool fp8 = kv == Dtype::fp8_e4m3 || kv == Dtype::fp8_e5m2;
  const std::string type = "kv_dtype='" + std::string(attune::to_string(kv)) + "'";
  // Where each array's (batch, KV head) row starts, in bytes from `base` (per-head fp8: not used).
  const char* base[2] = {};
  std::int64_t batch_bytes[2] = {}, head_bytes[2] = {};
  for (int i = 0; i < 2; ++i) {
    const bool is_k = i == 0;
    const char* name = is_k ? "k_scales" : "v_scales";
    PyObject* o = is_k ? var.k_scales : var.v_scales;
    if (o == Py_None)
      bad_shape(std::string(name) + ": needed with " + type + " (attune.quantize_kv returns the codes and their scales)");
    const auto every_head = [&](float value) {
      c.fp8_scales[i].assign(static_cast<std::size_t>(p.heads_kv), value);
      base[i] = reinterpret_cast<const char*>(c.fp8_scales[i].data());
    };
    if (fp8 && (PyFloat_Check(o) || PyLong_Check(o))) {
      every_head(static_cast<float>(PyFloat_AsDouble(o)));
      continue;
    }
    const bool ok = fw == Framework::numpy ? PyArray_Check(o) : PyObject_TypeCheck(o, g_torch.tensor);
    if (!ok) type_error(std::string(name) + ": must be of q's framework (a numpy array or a torch tensor), got " + type_name(o));
    View s;
    view_of(o, fw, name, Elements::floats, s);
    const Dtype want_type = kv == Dtype::int4 ? Dtype::fp16 : Dtype::fp32;
    if (s.dtype != want_type)
      type_error(std::string(name) + ": " + type + " scales are " + (kv == Dtype::int4 ? "float16" : "float32") +
                 ", got " + std::string(attune::to_string(s.dtype)));
    std::int64_t count = 1;
    for (int d = 0; d < s.ndim; ++d) count *= s.shape[d];
    if (fp8 && count == 1) {  // a 0-d or one-element tensor: every head
      every_head(*reinterpret_cast<const float*>(s.data));
      continue;
    }
    const std::vector<std::int64_t> want = scale_shape(p, is_k, c.q.ndim == 4);
    bool shape_ok = s.ndim == static_cast<int>(want.size());
    for (int d = 0; shape_ok && d < s.ndim; ++d) shape_ok = s.shape[d] == want[static_cast<std::size_t>(d)];
    if (!shape_ok)
      bad_shape(std::string(name) + ": shape " + shape_text(s) + " does not match the " + type + (is_k ? " K" : " V") +
                " scales of this problem " + shape_text(want) + " (docs/quantized-kv.md)");
    // Per-token records: the axes (batch, head, token), then int4's (group, scale/min) pair.
    const bool per_token = !fp8 && !(kv == Dtype::int8_kc && is_k);
    const int token_axis = kv == Dtype::int4 ? s.ndim - 3 : s.ndim - 1;
    const auto record = static_cast<std::int64_t>(s.itemsize) * (kv == Dtype::int4 ? 2 * s.shape[s.ndim - 2] : 1);
    const auto stride = [&](int axis) { return axis < 0 || s.shape[axis] == 1 ? 0 : s.strides[axis]; };
    const std::int64_t sb = stride(token_axis - 2), sh = stride(token_axis - 1), st = stride(token_axis);
    const bool records_in_place = per_token && s.aligned && (st == 0 ? p.seq_kv == 1 : st == record) &&
                                  sb >= 0 && sh >= 0 && sb % record == 0 && sh % record == 0 &&
                                  (kv != Dtype::int4 || ((stride(s.ndim - 1) == 0 || stride(s.ndim - 1) == 2) &&
                                                             (stride(s.ndim - 2) == 0 || stride(s.ndim - 2) == 4)));
    std::int64_t row = static_cast<std::int64_t>(s.itemsize);  // bytes of a dense (batch, head) row
    for (std::size_t d = c.q.ndim == 4 ? 2 : 1; d < want.size(); ++d) row *= want[d];
    if (is_dense(s)) {
      base[i] = s.data;
      head_bytes[i] = row;
    } else if (records_in_place) {
      base[i] = s.data;
      batch_bytes[i] = sb;
      head_bytes[i] = sh;
      auto& rs = is_k ? c.data.kv_scales.k_strides : c.data.kv_scales.v_strides;
      rs = {sb / record, sh / record, 1};
      continue;
    } else {
      c.scale_copies[i] = contiguous_like(s);  // filled even without `run`: validate() reads fp8's
      base[i] = c.scale_copies[i].view.data;
      copy_view(s, c.scale_copies[i].view);
      ++g_copies;
      head_bytes[i] = row;
    }
    if (!fp8) batch_bytes[i] = head_bytes[i] * p.heads_kv;
  }
  c.data.kv_scales.k = base[0];
  c.data.kv_scales.v = base[1];
  if (!run || fp8) return;  // fp8's per-head scales: checked by VariantData::validate on every call
  attune::Problem row = p;
  row.batch = row.heads_kv = row.heads_q = 1;
  for (std::int64_t b = 0; b < p.batch; ++b) {
    for (std::int64_t h = 0; h < p.heads_kv; ++h) {
      attune::KvScales one;
      one.k = base[0] + b * batch_bytes[0] + h * head_bytes[0];
      one.v = base[1] + b * batch_bytes[1] + h * head_bytes[1];
      try {
        attune::check_kv_scales(row, one);
      } catch (const attune::InvalidArgument& e) {
        throw attune::InvalidArgument(std::string(e.what()) + " (index within the row of batch " + std::to_string(b) +
                                      ", KV head " + std::to_string(h) + ")");
      }
    }
  }
}

// Reads the mask (bool: True = visible, float32: added to the logits) broadcastable to
// [batch, heads_q, seq_q, seq_kv] into the problem's planes; gathers it when its planes are not
// contiguous (broadcast query or head axes, e.g. a [batch, 1, 1, seq_kv] padding mask).
void read_mask(Call& c, PyObject* mask, Framework fw, bool run) {
  View& m = c.mask;
  view_of(mask, fw, "mask", Elements::mask, m);
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

// An empty array of `fw` with this shape and element type (Q/O's float types).
nb::object empty_array(Framework fw, const std::int64_t* shape, int ndim, Dtype dtype, char** data) {
  if (fw == Framework::numpy) {
    npy_intp dims[kMaxDims];
    for (int i = 0; i < ndim; ++i) dims[i] = shape[i];
    PyArray_Descr* descr;  // a new reference, which PyArray_Empty steals
    if (dtype == Dtype::bf16) {
      descr = g_np_bf16;
      Py_INCREF(descr);
    } else {
      descr = PyArray_DescrFromType(dtype == Dtype::fp32 ? NPY_FLOAT32 : NPY_FLOAT16);
    }
    PyObject* a = PyArray_Empty(ndim, dims, descr, 0);
    if (!a) throw nb::python_error();
    *data = static_cast<char*>(PyArray_DATA(reinterpret_cast<PyArrayObject*>(a)));
    return nb::steal(a);
  }
  PyObject* t_shape = PyTuple_New(ndim);
  for (int i = 0; i < ndim; ++i) PyTuple_SET_ITEM(t_shape, i, PyLong_FromLongLong(shape[i]));
  PyObject* t_dtype = dtype == Dtype::fp32 ? g_torch.f32 : dtype == Dtype::fp16 ? g_torch.f16 : g_torch.bf16;
  PyObject* args[] = {nullptr, t_shape, t_dtype};
  PyObject* t = PyObject_Vectorcall(g_torch.empty, args + 1, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, s_dtype_kwnames);
  Py_DECREF(t_shape);
  if (!t) throw nb::python_error();
  nb::object result = nb::steal(t);
  *data = static_cast<char*>(PyLong_AsVoidPtr(nb::steal(call0(t, s_data_ptr)).ptr()));
  return result;
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
  if (!var.kv_dtype && (var.k_scales != Py_None || var.v_scales != Py_None))
    bad_shape("k_scales, v_scales: given without kv_dtype (the quantized type of k and v, e.g. kv_dtype='int8')");
  view_of(q, fw, "q", Elements::floats, c.q);
  const Elements kv = var.kv_dtype ? Elements::codes : Elements::floats;
  view_of(k, fw, "k", kv, c.k);
  view_of(v, fw, "v", kv, c.v);
  if (var.kv_dtype) c.k.dtype = c.v.dtype = *var.kv_dtype;
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
  read_variant_arrays(c, var);
  if (var.kv_dtype) read_kv_scales(c, var, fw, run);

  // The output: the caller's (same framework and type, q's shape with d_v, rows contiguous) or new.
  if (out != Py_None) {
    const bool ok = fw == Framework::numpy ? PyArray_Check(out) : PyObject_TypeCheck(out, g_torch.tensor);
    if (!ok) type_error(fw == Framework::numpy ? "out: must be a numpy array like q" : "out: must be a CPU torch tensor like q");
    try {
      view_of(out, fw, "out", Elements::floats, c.out);
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
    if (fw == Framework::torch && p.d_v == p.d_k && same_strides(c.out, c.q)) {
      // torch.empty_like(q): ~0.9 us where torch.empty(shape, dtype=) parses keywords for ~1.5 us
      // (q's exact strides are the contiguous ones here, which empty_like keeps).
      PyObject* t = PyObject_CallOneArg(g_torch.empty_like, q);
      if (!t) throw nb::python_error();
      c.result = nb::steal(t);
      c.out.data = static_cast<char*>(PyLong_AsVoidPtr(nb::steal(call0(t, s_data_ptr)).ptr()));
    } else {
      c.result = empty_array(fw, c.out.shape, c.out.ndim, c.q.dtype, &c.out.data);
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
    auto s = row_strides(*views[i]);
    if (s && views[i]->dtype == Dtype::int4) *s = {s->batch * 2, s->head * 2, s->row * 2};  // bytes -> nibbles
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
  if (!run) {  // workspace_bytes() and resolve() refuse what attention() would refuse
    p.validate();
    c.data.validate(p);
  }
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
  if (c.p.plain() && !c.p.strided && c.p.mask == attune::MaskKind::none && !attune::is_quantized(c.p.kv_type())) {
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
bool is_int(nb::handle h) { return PyLong_Check(h.ptr()) && !PyBool_Check(h.ptr()); }

std::int64_t count_arg(nb::handle h, const char* name) {
  if (!is_int(h)) type_error(std::string(name) + ": must be an int, got " + repr_of(h));
  const long long value = PyLong_AsLongLong(h.ptr());
  if (value == -1 && PyErr_Occurred()) throw nb::python_error();
  if (value < 0) bad_shape(std::string(name) + ": must be >= 0 (0: the default), got " + std::to_string(value));
  return value;
}

// An int argument whose sign prepare() checks (window, top_k); beyond int64: one ValueError line.
std::int64_t int_arg(nb::handle h, const char* name) {
  if (!is_int(h)) type_error(std::string(name) + ": must be an int, got " + repr_of(h));
  const long long value = PyLong_AsLongLong(h.ptr());
  if (value == -1 && PyErr_Occurred()) {
    PyErr_Clear();
    bad_shape(std::string(name) + ": must fit in 64 bits, got " + repr_of(h));
  }
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

std::optional<int> threads_arg(nb::handle h) {
  if (h.is_none()) return std::nullopt;
  if (!is_int(h)) type_error("threads: must be an int or None, got " + repr_of(h));
  const long long t = PyLong_AsLongLong(h.ptr());
  if (t < 1) bad_shape("threads: must be >= 1 (or None for all cores), got " + repr_of(h));
  return static_cast<int>(std::min<long long>(t, std::numeric_limits<int>::max()));
}

std::optional<Dtype> kv_dtype_arg(nb::handle h) {
  if (h.is_none()) return std::nullopt;
  const std::string_view name = str_arg(h, "kv_dtype: must be a quantized type name (str) or None");
  const std::optional<Dtype> kv = attune::parse_dtype(name);
  if (!kv || !attune::is_quantized(*kv))
    bad_shape("kv_dtype: must be int8, int8_kc, fp8_e4m3, fp8_e5m2 or int4 (float K/V types come from the K/V "
              "arrays themselves), got '" + std::string(name) + "'");
  return kv;
}

// The keyword arguments attention(), workspace_bytes() and resolve() share, as nanobind passes them.
struct Args {
  nb::handle causal, scale, kernel, isa, threads, block_q, block_kv, kv_splits, max_memory, out, causal_align, window,
      softcap, mask, alibi_slopes, sinks, cu_seqlens_q, cu_seqlens_kv, top_k, kv_dtype, k_scales, v_scales;
};

// Options and variants of a call from its keyword arguments, with one-line errors naming them.
Variants variants_of(Call& c, const Args& a) {
  std::optional<std::string> isa_name;
  if (!a.isa.is_none()) isa_name = std::string(str_arg(a.isa, "isa: must be an ISA name (str) or None"));
  const std::optional<int> nthreads = threads_arg(a.threads);
  c.opt = options_of(std::string(str_arg(a.kernel, "kernel: must be a kernel name (str)")), isa_name, nthreads,
                     count_arg(a.block_q, "block_q"), count_arg(a.block_kv, "block_kv"),
                     static_cast<int>(std::min<std::int64_t>(count_arg(a.kv_splits, "kv_splits"), std::numeric_limits<int>::max())),
                     static_cast<std::size_t>(count_arg(a.max_memory, "max_memory")));
  Variants var;
  const int truth = PyObject_IsTrue(a.causal.ptr());
  if (truth < 0) throw nb::python_error();
  var.causal = truth != 0;
  var.causal_align = str_arg(a.causal_align, "causal_align: must be 'bottom_right' or 'top_left'");
  var.window = int_arg(a.window, "window");
  var.softcap = float_arg(a.softcap, "softcap");
  if (!a.scale.is_none()) var.scale = float_arg(a.scale, "scale");
  var.top_k = int_arg(a.top_k, "top_k");
  var.alibi_slopes = a.alibi_slopes.ptr();
  var.sinks = a.sinks.ptr();
  var.cu_seqlens_q = a.cu_seqlens_q.ptr();
  var.cu_seqlens_kv = a.cu_seqlens_kv.ptr();
  var.kv_dtype = kv_dtype_arg(a.kv_dtype);
  var.k_scales = a.k_scales.ptr();
  var.v_scales = a.v_scales.ptr();
  return var;
}

nb::object attention_call(nb::handle q, nb::handle k, nb::handle v, const Args& a) {
  Call c;
  const Variants var = variants_of(c, a);
  return run(c, q, k, v, a.out, a.mask, var);
}

// The problem of a call without running it (no output allocated, no copies made).
nb::object workspace_bytes(nb::handle q, nb::handle k, nb::handle v, const Args& a) {
  Call c;
  prepare(c, q.ptr(), k.ptr(), v.ptr(), a.out.ptr(), a.mask.ptr(), variants_of(c, a), false);
  return nb::int_(attune::workspace_bytes(c.p, c.opt));
}

nb::object resolve(nb::handle q, nb::handle k, nb::handle v, const Args& a) {
  Call c;
  prepare(c, q.ptr(), k.ptr(), v.ptr(), a.out.ptr(), a.mask.ptr(), variants_of(c, a), false);
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

// One binding signature for the three (nanobind matches the keywords; see def_attention_like).
template <nb::object (*Body)(nb::handle, nb::handle, nb::handle, const Args&)>
nb::object with_args(nb::handle q, nb::handle k, nb::handle v, nb::handle causal, nb::handle scale, nb::handle kernel,
                     nb::handle isa, nb::handle threads, nb::handle block_q, nb::handle block_kv, nb::handle kv_splits,
                     nb::handle max_memory, nb::handle out, nb::handle causal_align, nb::handle window,
                     nb::handle softcap, nb::handle mask, nb::handle alibi_slopes, nb::handle sinks,
                     nb::handle cu_seqlens_q, nb::handle cu_seqlens_kv, nb::handle top_k, nb::handle kv_dtype,
                     nb::handle k_scales, nb::handle v_scales) {
  return Body(q, k, v,
              Args{causal, scale, kernel, isa, threads, block_q, block_kv, kv_splits, max_memory, out, causal_align,
                   window, softcap, mask, alibi_slopes, sinks, cu_seqlens_q, cu_seqlens_kv, top_k, kv_dtype, k_scales,
                   v_scales});
}

// attune.torch.sdpa's eager call: torch's SDPA conventions (top-left is_causal, heads_q == heads_kv
// unless enable_gqa) on the default options. Returns None when autograd would record the call
// (grad mode on and an input requiring grad): the caller then runs the registered op, whose
// backward raises. These checks cost ~1 us a call as Python code, reading the same attributes.
nb::object sdpa_call(nb::handle q, nb::handle k, nb::handle v, nb::handle mask, bool is_causal,
                     std::optional<float> scale, bool enable_gqa, nb::handle sinks, float softcap) {
  if (have_torch() && PyObject_TypeCheck(q.ptr(), g_torch.tensor)) {
    nb::object grad = nb::steal(PyObject_CallNoArgs(g_torch.is_grad_enabled));
    if (!grad.is_valid()) throw nb::python_error();
    if (grad.ptr() == Py_True) {
      for (nb::handle t : {q, k, v, sinks}) {
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
  var.sinks = sinks.ptr();
  var.softcap = softcap;
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
alibi_slopes: [heads_q] floats, logits s -> s - slope_h |i' - j|. sinks: [heads_q] floats (logit
units, unscaled; -inf: none), each joins its head's softmax denominator as e^sink (gpt-oss).
top_k: keep each row's k largest logits (0: off). cu_seqlens_q, cu_seqlens_kv: varlen, [n + 1]
cumulative token counts (0, ..., seq) of n sequences packed along seq in a batch-1 (or 3-D)
problem; each sequence is its own frame (causal, window, ALiBi), seeing no key of another.
These take numpy arrays, CPU tensors or lists. Order: band, softcap, ALiBi, mask, top_k, softmax.
kv_dtype: k and v hold quantized codes ('int8', 'int8_kc', 'fp8_e4m3', 'fp8_e5m2', 'int4'; int8
or uint8 arrays [.., heads_kv, seq_kv, row bytes], int4 d/2 bytes a row) with k_scales, v_scales
as attune.quantize_kv returns them (docs/quantized-kv.md; fp8 also takes one number).
kernel: a name from kernels() or "auto"; isa: an ISA name from info()["isa_runnable"];
threads: worker threads (None: all cores). block_q, block_kv, kv_splits: tile overrides
(0: default). max_memory: working-memory limit in bytes (0: the ATTUNE_MAX_MEMORY environment
variable, else half the physical memory); above it MemoryError.
Raises ValueError for bad shapes or options, TypeError for wrong types or devices.)";

// ---- Paged K/V (Problem::paged): attune.paged_attention and attune.paged_append ----------------

// A paged pool's axis order: 'heads_first' [num_blocks, heads_kv, block_size, d] (attune's default,
// a KV head's rows of a block contiguous) or 'vllm' [num_blocks, block_size, heads_kv, d]
// (vLLM's and transformers' continuous-batching pages).
enum class PagedLayout : std::uint8_t { heads_first, vllm };

const char* pool_text(PagedLayout layout) {
  return layout == PagedLayout::heads_first ? "[num_blocks, heads_kv, block_size, d] (layout='heads_first')"
                                            : "[num_blocks, block_size, heads_kv, d] (layout='vllm')";
}

PagedLayout layout_arg(nb::handle h) {
  const std::string_view s = str_arg(h, "layout: must be 'heads_first' or 'vllm'");
  if (s == "heads_first") return PagedLayout::heads_first;
  if (s == "vllm") return PagedLayout::vllm;
  bad_shape("layout: must be 'heads_first' ([num_blocks, heads_kv, block_size, d]) or 'vllm' ([num_blocks, "
            "block_size, heads_kv, d]), got '" + std::string(s) + "'");
}

std::string strides_text(const View& v) {
  std::string s = "(";
  for (int i = 0; i < v.ndim; ++i) s += (i ? ", " : "") + std::to_string(v.strides[i]);
  return s + (v.ndim == 1 ? ",)" : ")") + " bytes";
}

// The sizes of a pool and its element strides of (block, head, row), as the kernels read it in
// place (int4: strides in nibbles). Refuses pools whose rows are not contiguous.
struct Pool {
  std::int64_t num_blocks = 0, heads_kv = 0, block_size = 0, d = 0;
  attune::Strides strides;
};

Pool pool_of(const View& x, const char* name, PagedLayout layout) {
  if (x.ndim != 4) bad_shape(std::string(name) + ": expected 4-D " + pool_text(layout) + ", got shape " + shape_text(x));
  const int head_axis = layout == PagedLayout::heads_first ? 1 : 2, row_axis = 3 - head_axis;
  const bool int4 = x.dtype == Dtype::int4;
  Pool pool;
  pool.num_blocks = x.shape[0];
  pool.heads_kv = x.shape[head_axis];
  pool.block_size = x.shape[row_axis];
  pool.d = x.shape[3] * (int4 ? 2 : 1);
  for (std::int64_t n : {pool.num_blocks, pool.heads_kv, pool.block_size, pool.d})
    if (n < 1) bad_shape(std::string(name) + ": every axis must be >= 1, got shape " + shape_text(x) + " " + pool_text(layout));
  const auto is = static_cast<std::int64_t>(x.itemsize);
  bool ok = x.aligned && (x.shape[3] == 1 || x.strides[3] == is);
  const int axes[3] = {0, head_axis, row_axis};
  std::int64_t el[3] = {};
  for (int i = 0; i < 3 && ok; ++i) {
    if (x.shape[axes[i]] == 1) continue;  // never stepped along
    ok = x.strides[axes[i]] >= 0 && x.strides[axes[i]] % is == 0;
    el[i] = x.strides[axes[i]] / is * (int4 ? 2 : 1);
  }
  if (!ok)
    bad_shape(std::string(name) + ": the cache is read in place, so its rows (last axis) must be contiguous and its "
              "strides non-negative, got strides " + strides_text(x));
  pool.strides = {el[0], el[1], el[2]};
  return pool;
}

Framework same_framework(std::initializer_list<nb::handle> objects, const char* names) {
  try {
    const Framework fw = framework_of(objects.begin()->ptr());
    for (nb::handle o : objects)
      if (framework_of(o.ptr()) != fw) throw std::invalid_argument("");
    return fw;
  } catch (const std::invalid_argument&) {
    std::string got;
    for (nb::handle o : objects) got += (got.empty() ? "" : ", ") + type_name(o.ptr());
    type_error(std::string(names) + " must be all numpy arrays or all torch tensors, got " + got);
  }
}

// The paged caches (codes with kv_dtype), checked to agree; fills the problem's pool fields.
void read_pools(Call& c, nb::handle k_cache, nb::handle v_cache, Framework fw, std::optional<Dtype> kv,
                PagedLayout layout, Pool& kp, Pool& vp) {
  const Elements kind = kv ? Elements::codes : Elements::floats;
  view_of(k_cache.ptr(), fw, "k_cache", kind, c.k);
  view_of(v_cache.ptr(), fw, "v_cache", kind, c.v);
  if (kv) c.k.dtype = c.v.dtype = *kv;
  if (c.k.dtype != c.v.dtype) type_error("k_cache and v_cache must have the same element type");
  kp = pool_of(c.k, "k_cache", layout);
  vp = pool_of(c.v, "v_cache", layout);
  if (vp.num_blocks != kp.num_blocks || vp.heads_kv != kp.heads_kv || vp.block_size != kp.block_size)
    bad_shape("k_cache and v_cache must agree on num_blocks, heads_kv and block_size, got shapes " + shape_text(c.k) +
              " and " + shape_text(c.v) + " " + pool_text(layout));
  attune::Problem& p = c.p;
  p.heads_kv = kp.heads_kv;
  p.d_k = kp.d;
  p.d_v = vp.d;
  p.block_size = kp.block_size;
  p.num_blocks = kp.num_blocks;
  p.kv_dtype = c.k.dtype;
}

// block_table [sequences, max_blocks]: an int32 C-contiguous array is read in place; other
// integer arrays are converted (ids beyond int32 become INT32_MIN, refused if a context reaches them).
void read_block_table(Call& c, nb::handle h, std::int64_t sequences) {
  PyObject* o = h.ptr();
  nb::object converted;
  if (have_torch() && PyObject_TypeCheck(o, g_torch.tensor)) {
    nb::object is_cpu = nb::steal(get(o, s_is_cpu));
    if (is_cpu.ptr() != Py_True)
      type_error("block_table: attune runs on the CPU, got a tensor on device '" + str_of(nb::steal(get(o, s_device)).ptr()) + "'");
    nb::object dt = nb::steal(get(o, s_dtype));
    if (nb::cast<bool>(dt.attr("is_floating_point")) || nb::cast<bool>(dt.attr("is_complex")) || dt.ptr() == g_torch.boolean)
      type_error("block_table: element type must be int32 (or another integer type), got " + str_of(dt.ptr()));
    converted = nb::handle(o).attr("numpy")();  // a view of the tensor's memory
    o = converted.ptr();
  } else if (!PyArray_Check(o)) {
    type_error("block_table: must be a 2-D numpy array or CPU torch tensor of int32 block ids, got " + type_name(o));
  }
  auto* a = reinterpret_cast<PyArrayObject*>(o);
  if (!PyArray_ISINTEGER(a))
    type_error("block_table: element type must be int32 (or another integer type), got numpy " +
               str_of(reinterpret_cast<PyObject*>(PyArray_DESCR(a))));
  std::vector<std::int64_t> shape(PyArray_DIMS(a), PyArray_DIMS(a) + PyArray_NDIM(a));
  if (shape.size() != 2) bad_shape("block_table: expected 2-D [sequences, max_blocks], got shape " + shape_text(shape));
  if (shape[0] != sequences)
    bad_shape("block_table: expected one row per sequence (len(seq_lens) = " + std::to_string(sequences) + "), got shape " +
              shape_text(shape));
  if (shape[1] < 1) bad_shape("block_table: max_blocks (axis 1) must be >= 1, got shape " + shape_text(shape));
  c.p.max_blocks = shape[1];
  if (PyArray_TYPE(a) == NPY_INT32 && PyArray_IS_C_CONTIGUOUS(a) && PyArray_ISALIGNED(a) && PyArray_ISNOTSWAPPED(a)) {
    c.data.block_table = static_cast<const std::int32_t*>(PyArray_DATA(a));
    return;
  }
  nb::object wide = nb::steal(PyArray_FROM_OTF(o, NPY_INT64, NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST));
  if (!wide.is_valid()) throw nb::python_error();
  const auto* ids = static_cast<const std::int64_t*>(PyArray_DATA(reinterpret_cast<PyArrayObject*>(wide.ptr())));
  c.table.resize(static_cast<std::size_t>(shape[0] * shape[1]));
  for (std::size_t i = 0; i < c.table.size(); ++i) {
    const bool fits = ids[i] >= std::numeric_limits<std::int32_t>::min() && ids[i] <= std::numeric_limits<std::int32_t>::max();
    c.table[i] = fits ? static_cast<std::int32_t>(ids[i]) : std::numeric_limits<std::int32_t>::min();
  }
  c.data.block_table = c.table.data();
}

// k_scales and v_scales of a quantized paged cache: per-token records [num_blocks, heads_kv,
// block_size] ('heads_first') or [num_blocks, block_size, heads_kv] ('vllm'), float32 (int4:
// [.., d / 32, 2] float16 (scale, min) pairs), read in place with any whole-record strides
// (`write`: C-contiguous and writeable, as paged_append fills them); fp8: [heads_kv] or one number;
// int8_kc's K: [heads_kv, d_k]. The records are not scanned: a pool's unwritten slots hold anything,
// and only those the tables reach are read.
void read_paged_scales(Call& c, PyObject* k_scales, PyObject* v_scales, Framework fw, PagedLayout layout, bool write) {
  const attune::Problem& p = c.p;
  const Dtype kv = p.kv_type();
  const bool fp8 = kv == Dtype::fp8_e4m3 || kv == Dtype::fp8_e5m2;
  const std::string type = "kv_dtype='" + std::string(attune::to_string(kv)) + "'";
  const void* base[2] = {};
  for (int i = 0; i < 2; ++i) {
    const bool is_k = i == 0;
    const char* name = is_k ? "k_scales" : "v_scales";
    PyObject* o = is_k ? k_scales : v_scales;
    if (o == Py_None)
      bad_shape(std::string(name) + ": needed with " + type + " (the cache's scales: docs/python.md, paged K/V)");
    const auto every_head = [&](float value) {
      c.fp8_scales[i].assign(static_cast<std::size_t>(p.heads_kv), value);
      base[i] = c.fp8_scales[i].data();
    };
    if (fp8 && (PyFloat_Check(o) || PyLong_Check(o))) {
      every_head(static_cast<float>(PyFloat_AsDouble(o)));
      continue;
    }
    const bool ok = fw == Framework::numpy ? PyArray_Check(o) : PyObject_TypeCheck(o, g_torch.tensor);
    if (!ok) type_error(std::string(name) + ": must be of the cache's framework (a numpy array or a torch tensor), got " + type_name(o));
    View s;
    view_of(o, fw, name, Elements::floats, s);
    const Dtype want_type = kv == Dtype::int4 ? Dtype::fp16 : Dtype::fp32;
    if (s.dtype != want_type)
      type_error(std::string(name) + ": " + type + " scales are " + (kv == Dtype::int4 ? "float16" : "float32") + ", got " +
                 std::string(attune::to_string(s.dtype)));
    std::int64_t count = 1;
    for (int d = 0; d < s.ndim; ++d) count *= s.shape[d];
    if (fp8 && count == 1) {
      every_head(*reinterpret_cast<const float*>(s.data));
      continue;
    }
    const bool per_token = !fp8 && !(kv == Dtype::int8_kc && is_k);
    std::vector<std::int64_t> want;
    if (fp8) {
      want = {p.heads_kv};
    } else if (!per_token) {
      want = {p.heads_kv, p.d_k};
    } else {
      want = layout == PagedLayout::heads_first ? std::vector<std::int64_t>{p.num_blocks, p.heads_kv, p.block_size}
                                                : std::vector<std::int64_t>{p.num_blocks, p.block_size, p.heads_kv};
      if (kv == Dtype::int4) {
        want.push_back((is_k ? p.d_k : p.d_v) / 32);
        want.push_back(2);
      }
    }
    bool shape_ok = s.ndim == static_cast<int>(want.size());
    for (int d = 0; shape_ok && d < s.ndim; ++d) shape_ok = s.shape[d] == want[static_cast<std::size_t>(d)];
    if (!shape_ok)
      bad_shape(std::string(name) + ": shape " + shape_text(s) + " does not match the " + type + (is_k ? " K" : " V") +
                " scales of this paged cache " + shape_text(want) + " (docs/python.md, paged K/V)");
    if (write && per_token && (!is_dense(s) || !s.writeable))
      bad_shape(std::string(name) + ": paged_append writes the scale records, which must be a C-contiguous, writeable array");
    if (!per_token) {  // a few floats: gathered when not contiguous
      if (is_dense(s)) {
        base[i] = s.data;
      } else {
        c.scale_copies[i] = contiguous_like(s);
        copy_view(s, c.scale_copies[i].view);
        ++g_copies;
        base[i] = c.scale_copies[i].view.data;
      }
      continue;
    }
    // Record strides of (block, head, row); int4's (group, pair) axes must be dense.
    const auto record = static_cast<std::int64_t>(s.itemsize) * (kv == Dtype::int4 ? 2 * want[3] : 1);
    const auto stride = [&](int axis) { return s.shape[axis] == 1 ? 0 : s.strides[axis]; };
    const int head_axis = layout == PagedLayout::heads_first ? 1 : 2, row_axis = 3 - head_axis;
    const std::int64_t st[3] = {stride(0), stride(head_axis), stride(row_axis)};
    bool in_place = s.aligned && (kv != Dtype::int4 || ((stride(4) == 0 || stride(4) == 2) && (stride(3) == 0 || stride(3) == 4)));
    for (std::int64_t x : st) in_place = in_place && x >= 0 && x % record == 0;
    if (!in_place)
      bad_shape(std::string(name) + ": the records are read in place, so their strides must be non-negative whole records, "
                "got strides " + strides_text(s));
    auto& rs = is_k ? c.data.kv_scales.k_strides : c.data.kv_scales.v_strides;
    rs = {st[0] / record, st[1] / record, st[2] / record};
    base[i] = s.data;
  }
  c.data.kv_scales.k = base[0];
  c.data.kv_scales.v = base[1];
  if (!write) return;  // attention: VariantData::validate checks fp8's
  // paged_append divides by the fixed scales (fp8's per head, int8_kc's K per channel).
  for (int i = 0; i < 2; ++i) {
    const bool fixed = fp8 || (kv == Dtype::int8_kc && i == 0);
    const std::int64_t count = fp8 ? p.heads_kv : p.heads_kv * p.d_k;
    for (std::int64_t j = 0; fixed && j < count; ++j) {
      const float x = static_cast<const float*>(base[i])[j];
      if (!std::isfinite(x) || x <= 0.0f)
        bad_shape(std::string(i == 0 ? "k_scales" : "v_scales") + "[" + std::to_string(j) + "] = " + std::to_string(x) +
                  ": the cache's fixed scales must be finite and > 0");
    }
  }
}

// Element strides of a packed [total, heads, d] tensor as (batch, head, row), when its rows are
// contiguous; the batch stride (batch 1) is the tensor's extent.
std::optional<attune::Strides> packed_strides(const View& v) {
  const auto is = static_cast<std::int64_t>(v.itemsize);
  if (!v.aligned || (v.shape[2] > 1 && v.strides[2] != is)) return std::nullopt;
  std::int64_t el[2] = {};
  for (int i = 0; i < 2; ++i) {
    if (v.shape[i] == 1) continue;
    if (v.strides[i] < 0 || v.strides[i] % is != 0) return std::nullopt;
    el[i] = v.strides[i] / is;
  }
  return attune::Strides{v.shape[0] * v.shape[1] * v.shape[2], el[1], el[0]};
}

nb::object paged_attention_call(nb::handle q, nb::handle k_cache, nb::handle v_cache, nb::handle block_table,
                                nb::handle seq_lens, nb::handle cu_seqlens_q, nb::handle scale, nb::handle causal,
                                nb::handle window, nb::handle softcap, nb::handle alibi_slopes, nb::handle sinks,
                                nb::handle kv_dtype, nb::handle k_scales, nb::handle v_scales, nb::handle kernel,
                                nb::handle threads, nb::handle out, nb::handle layout) {
  Call c;
  c.opt = options_of(std::string(str_arg(kernel, "kernel: must be a kernel name (str)")), std::nullopt,
                     threads_arg(threads), 0, 0, 0, 0);
  const PagedLayout lay = layout_arg(layout);
  Variants var;
  const int truth = PyObject_IsTrue(causal.ptr());
  if (truth < 0) throw nb::python_error();
  var.causal = truth != 0;
  var.window = int_arg(window, "window");
  if (var.window < 0) bad_shape("window: must be >= 0 (0: no window), got " + std::to_string(var.window));
  var.softcap = float_arg(softcap, "softcap");
  if (!scale.is_none()) var.scale = float_arg(scale, "scale");
  var.alibi_slopes = alibi_slopes.ptr();
  var.sinks = sinks.ptr();
  var.kv_dtype = kv_dtype_arg(kv_dtype);
  if (!var.kv_dtype && (!k_scales.is_none() || !v_scales.is_none()))
    bad_shape("k_scales, v_scales: given without kv_dtype (the quantized type of the cache, e.g. kv_dtype='int8')");
  const Framework fw = same_framework({q, k_cache, v_cache}, "q, k_cache and v_cache");

  attune::Problem& p = c.p;
  Pool kp, vp;
  read_pools(c, k_cache, v_cache, fw, var.kv_dtype, lay, kp, vp);
  view_of(q.ptr(), fw, "q", Elements::floats, c.q);
  if (c.q.ndim != 3)
    bad_shape("q: expected 3-D [total_q, heads_q, d_k] (the sequences' queries packed along axis 0), got shape " + shape_text(c.q));
  p.seq_q = c.q.shape[0];
  p.heads_q = c.q.shape[1];
  if (c.q.shape[2] != p.d_k)
    bad_shape("d_k: q and k_cache must agree on the last axis" +
              std::string(p.kv_type() == Dtype::int4 ? " (int4 codes: d_k / 2 bytes a row)" : "") + ", got shapes " +
              shape_text(c.q) + " and " + shape_text(c.k));
  p.dtype = c.q.dtype;
  p.causal = var.causal;
  p.window = var.window;
  p.softcap = var.softcap;
  p.scale = var.scale;
  p.strided = true;  // queries [total, heads, d]: position-major
  read_variant_arrays(c, var);  // alibi_slopes and sinks

  // The sequences: context lengths -> cu_seqlens_kv; each one's queries end its context.
  std::vector<std::int64_t> lens_storage;
  const auto [lens, n] = small_array(seq_lens.ptr(), "seq_lens", lens_storage);
  if (n < 1) bad_shape("seq_lens: expected one context length per sequence, got none");
  c.cu_kv.assign(1, 0);
  for (std::int64_t s = 0; s < n; ++s) {
    if (lens[s] < 0 || lens[s] > (std::int64_t{1} << 48))
      bad_shape("seq_lens[" + std::to_string(s) + "] = " + std::to_string(lens[s]) + " must be >= 0 (a context length)");
    c.cu_kv.push_back(c.cu_kv.back() + lens[s]);
  }
  const auto [cu_q, nq] = small_array(cu_seqlens_q.ptr(), "cu_seqlens_q", c.cu_q);
  if (nq != n + 1)
    bad_shape("cu_seqlens_q: expected len(seq_lens) + 1 = " + std::to_string(n + 1) + " offsets (0, ..., total_q), got " +
              std::to_string(nq));
  const bool sorted = std::is_sorted(cu_q, cu_q + nq);  // else the library's message names the offset
  for (std::int64_t s = 0; sorted && s < n; ++s) {
    const std::int64_t queries = cu_q[s + 1] - cu_q[s];
    if (queries > lens[s])
      bad_shape("sequence " + std::to_string(s) + " has " + std::to_string(queries) + " queries but a context of " +
                std::to_string(lens[s]) + " keys (seq_lens counts the queries too: they are the last positions of "
                "their context)");
  }
  p.sequences = n;
  p.seq_kv = c.cu_kv.back();
  c.data.cu_seqlens_q = cu_q;
  c.data.cu_seqlens_kv = c.cu_kv.data();
  read_block_table(c, block_table, n);
  c.data.k_strides = kp.strides;
  c.data.v_strides = vp.strides;
  if (var.kv_dtype) read_paged_scales(c, k_scales.ptr(), v_scales.ptr(), fw, lay, false);

  const std::vector<std::int64_t> out_shape{p.seq_q, p.heads_q, p.d_v};
  if (const auto qs = packed_strides(c.q)) {
    c.data.q_strides = *qs;
  } else {
    c.copies[0] = contiguous_like(c.q);
    c.data.q_strides = *packed_strides(c.copies[0].view);
  }
  if (!out.is_none()) {
    const bool ok = fw == Framework::numpy ? PyArray_Check(out.ptr()) : PyObject_TypeCheck(out.ptr(), g_torch.tensor);
    if (!ok) type_error(fw == Framework::numpy ? "out: must be a numpy array like q" : "out: must be a CPU torch tensor like q");
    try {
      view_of(out.ptr(), fw, "out", Elements::floats, c.out);
    } catch (const TypeError&) {
      type_error("out: element type must be q's");
    }
    if (c.out.dtype != c.q.dtype) type_error("out: element type must be q's");
    if (c.out.ndim != 3 || c.out.shape[0] != p.seq_q || c.out.shape[1] != p.heads_q || c.out.shape[2] != p.d_v)
      bad_shape("out: shape must be " + shape_text(out_shape) + " [total_q, heads_q, d_v], got " + shape_text(c.out));
    if (!c.out.writeable) bad_shape("out: must be a writeable array");
    c.result = nb::borrow(out);
  } else {
    char* data = nullptr;
    c.result = empty_array(fw, out_shape.data(), 3, c.q.dtype, &data);
    c.out = c.q;
    c.out.data = data;
    c.out.shape[2] = p.d_v;
    c.out.strides[2] = static_cast<std::int64_t>(c.q.itemsize);
    c.out.strides[1] = p.d_v * c.out.strides[2];
    c.out.strides[0] = p.heads_q * c.out.strides[1];
    c.out.writeable = c.out.aligned = true;
  }
  if (const auto os = packed_strides(c.out)) {
    c.data.out_strides = *os;
  } else {
    c.copies[3] = contiguous_like(c.out);
    c.data.out_strides = *packed_strides(c.copies[3].view);
    c.scatter_out = true;
  }
  {
    nb::gil_scoped_release release;
    execute(c);
  }
  return std::move(c.result);
}

// attune.paged_append: vLLM's reshape_and_cache into a pool of either layout ('vllm' as a
// heads_first pool of one KV head and heads_kv times the rows, one call per head).
void paged_append_call(nb::handle k_cache, nb::handle v_cache, nb::handle key, nb::handle value, nb::handle slot_mapping,
                       nb::handle k_scales, nb::handle v_scales, nb::handle kv_dtype, nb::handle layout, nb::handle threads) {
  const PagedLayout lay = layout_arg(layout);
  const std::optional<Dtype> kv = kv_dtype_arg(kv_dtype);
  if (!kv && (!k_scales.is_none() || !v_scales.is_none()))
    bad_shape("k_scales, v_scales: given without kv_dtype (the quantized type of the cache, e.g. kv_dtype='int8')");
  const std::optional<int> nthreads = threads_arg(threads);
  const Framework fw = same_framework({k_cache, v_cache, key, value}, "k_cache, v_cache, key and value");
  Call c;  // the caches in c.k, c.v; the new rows in c.q, c.out
  attune::Problem& p = c.p;
  Pool kp, vp;
  read_pools(c, k_cache, v_cache, fw, kv, lay, kp, vp);
  for (const View* x : {&c.k, &c.v}) {
    const char* name = x == &c.k ? "k_cache" : "v_cache";
    if (!x->writeable) bad_shape(std::string(name) + ": must be a writeable array");
    if (!is_dense(*x))
      bad_shape(std::string(name) + ": paged_append writes C-contiguous pools " + pool_text(lay) + ", got strides " + strides_text(*x));
  }
  View& kn = c.q;
  View& vn = c.out;
  view_of(key.ptr(), fw, "key", Elements::floats, kn);
  view_of(value.ptr(), fw, "value", Elements::floats, vn);
  if (kn.dtype != vn.dtype) type_error("key and value must have the same element type");
  const std::int64_t tokens = kn.ndim == 3 ? kn.shape[0] : -1;
  if (kn.ndim != 3 || kn.shape[1] != p.heads_kv || kn.shape[2] != p.d_k || vn.ndim != 3 || vn.shape[0] != tokens ||
      vn.shape[1] != p.heads_kv || vn.shape[2] != p.d_v)
    bad_shape("key, value: expected [tokens, heads_kv, d_k] and [tokens, heads_kv, d_v] = [tokens, " +
              std::to_string(p.heads_kv) + ", " + std::to_string(p.d_k) + "] and [tokens, " + std::to_string(p.heads_kv) +
              ", " + std::to_string(p.d_v) + "] (the cache's), got shapes " + shape_text(kn) + " and " + shape_text(vn));
  std::vector<std::int64_t> slot_storage;
  const auto [slots, n] = small_array(slot_mapping.ptr(), "slot_mapping", slot_storage);
  if (n != tokens)
    bad_shape("slot_mapping: expected one slot per token (" + std::to_string(tokens) + "), got " + std::to_string(n));
  // Checked here with the caller's slot numbers (the library checks again, in its own).
  const std::int64_t pool_slots = p.num_blocks * p.block_size;
  std::vector<std::pair<std::int64_t, std::int64_t>> used;
  for (std::int64_t t = 0; t < n; ++t) {
    if (slots[t] >= pool_slots)
      bad_shape("slot_mapping[" + std::to_string(t) + "] = " + std::to_string(slots[t]) + " is outside the pool's " +
                std::to_string(pool_slots) + " slots (num_blocks x block_size; negative: skip the token)");
    if (slots[t] >= 0) used.emplace_back(slots[t], t);
  }
  std::sort(used.begin(), used.end());
  for (std::size_t i = 1; i < used.size(); ++i)
    if (used[i].first == used[i - 1].first)
      bad_shape("slot_mapping: tokens " + std::to_string(used[i - 1].second) + " and " + std::to_string(used[i].second) +
                " both write slot " + std::to_string(used[i].first));
  if (kv) read_paged_scales(c, k_scales.ptr(), v_scales.ptr(), fw, lay, true);
  for (int i : {0, 2}) {  // the new rows, contiguous
    const View& x = i == 0 ? kn : vn;
    if (is_dense(x)) continue;
    c.copies[i] = contiguous_like(x);
    copy_view(x, c.copies[i].view);
  }
  const void* k_rows = c.copies[0].bytes ? c.copies[0].view.data : kn.data;
  const void* v_rows = c.copies[2].bytes ? c.copies[2].view.data : vn.data;
  attune::PagedCache cache;
  cache.dtype = p.kv_type();
  cache.num_blocks = p.num_blocks;
  cache.block_size = p.block_size;
  cache.heads_kv = p.heads_kv;
  cache.d_k = p.d_k;
  cache.d_v = p.d_v;
  cache.k = c.k.data;
  cache.v = c.v.data;
  cache.k_scales = const_cast<void*>(c.data.kv_scales.k);
  cache.v_scales = const_cast<void*>(c.data.kv_scales.v);
  nb::gil_scoped_release release;
  if (lay == PagedLayout::heads_first || p.heads_kv == 1) {
    attune::paged_append(cache, k_rows, v_rows, kn.dtype, tokens, slots, nthreads.value_or(0));
    return;
  }
  // vLLM's [num_blocks, block_size, heads_kv, d] is [num_blocks, 1, block_size * heads_kv, d]:
  // head h of slot s is row s * heads_kv + h of a one-head pool (its records too: [num_blocks,
  // block_size, heads_kv]); per-head fixed scales (fp8, int8_kc's K) move to the head's own.
  const std::int64_t hkv = p.heads_kv;
  attune::PagedCache one = cache;
  one.heads_kv = 1;
  one.block_size = p.block_size * hkv;
  const auto es = static_cast<std::int64_t>(kn.itemsize);
  const auto bytes = [](std::int64_t n) { return static_cast<std::size_t>(n); };
  std::vector<std::byte> k_head(bytes(tokens * p.d_k * es)), v_head(bytes(tokens * p.d_v * es));
  std::vector<std::int64_t> head_slots(bytes(tokens));
  for (std::int64_t h = 0; h < hkv; ++h) {
    for (std::int64_t t = 0; t < tokens; ++t) {
      head_slots[bytes(t)] = slots[t] < 0 ? -1 : slots[t] * hkv + h;
      std::memcpy(k_head.data() + t * p.d_k * es, static_cast<const std::byte*>(k_rows) + (t * hkv + h) * p.d_k * es,
                  bytes(p.d_k * es));
      std::memcpy(v_head.data() + t * p.d_v * es, static_cast<const std::byte*>(v_rows) + (t * hkv + h) * p.d_v * es,
                  bytes(p.d_v * es));
    }
    const Dtype kvt = p.kv_type();
    const bool fp8 = kvt == Dtype::fp8_e4m3 || kvt == Dtype::fp8_e5m2;
    if (fp8) {
      one.k_scales = static_cast<float*>(cache.k_scales) + h;
      one.v_scales = static_cast<float*>(cache.v_scales) + h;
    } else if (kvt == Dtype::int8_kc) {
      one.k_scales = static_cast<float*>(cache.k_scales) + h * p.d_k;
    }
    attune::paged_append(one, k_head.data(), v_head.data(), kn.dtype, tokens, head_slots.data(), nthreads.value_or(0));
  }
}

constexpr const char* kPagedAttentionDoc = R"(Attention of packed queries over a paged K/V cache (vLLM's PagedAttention), read in place.

q [total_q, heads_q, d_k]: the queries of every sequence packed along axis 0 (FlashAttention's
varlen and vLLM's layout; attention()'s varlen takes [heads_q, total_q, d_k], i.e. q.transpose(0, 1)),
sequence s owning rows cu_seqlens_q[s]:cu_seqlens_q[s+1]. k_cache, v_cache: pools of blocks,
[num_blocks, heads_kv, block_size, d] (layout="heads_first") or [num_blocks, block_size, heads_kv, d]
(layout="vllm"), any strides whose rows are contiguous, never copied. block_table [sequences,
max_blocks] int32 (other integer types are converted): key j of sequence s is row j % block_size of
block block_table[s][j // block_size]; entries past a context are not read. seq_lens [sequences]:
context lengths (the queries included: they are the last positions of their context, so causal
is bottom-right; an empty context with no queries is allowed). Returns [total_q, heads_q, d_v] of
q's type (or writes `out`). Variants: scale, causal (default True), window, softcap, alibi_slopes,
sinks as in attention(). kv_dtype: the pools hold quantized codes, with k_scales, v_scales: per-token
records [num_blocks, heads_kv, block_size] ("heads_first") or [num_blocks, block_size, heads_kv]
("vllm") float32 (int4: [.., d / 32, 2] float16), fp8 [heads_kv] or one number, int8_kc's K
[heads_kv, d_k] (paged_append writes them). Bad tables, lengths or types: ValueError / TypeError.)";

constexpr const char* kPagedAppendDoc = R"(Writes new K/V rows into their slots of a paged cache, in place (vLLM's reshape_and_cache).

key [tokens, heads_kv, d_k], value [tokens, heads_kv, d_v] (float32, float16 or bfloat16) go to slot
slot_mapping[t] = block * block_size + row of k_cache, v_cache (C-contiguous pools in `layout`, see
paged_attention); a negative slot skips the token. A quantized cache (kv_dtype) gets each row
quantized as quantize_kv does: per-token scales are written into k_scales / v_scales (C-contiguous
records), fp8's per-head and int8_kc's per-channel K scales are the cache's fixed ones. Everything
is checked before anything is written (a slot outside the pool, two tokens for one slot: ValueError).)";

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

// A struct's fields as a Python dict: dict_of(field("cpu", ms.cpu), ...).
template <class T>
std::pair<const char*, const T&> field(const char* name, const T& value) {
  return {name, value};
}
template <class... T>
nb::dict dict_of(const std::pair<const char*, const T&>&... fields) {
  nb::dict d;
  ((d[fields.first] = fields.second), ...);
  return d;
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
  d["machine"] = dict_of(field("cpu", ms.cpu), field("isas", ms.isas), field("cores", ms.cores), field("l1d", ms.l1d),
                         field("l2", ms.l2), field("l3", ms.l3));
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

// attune.quantize_kv / dequantize_kv on one whole K or V, [batch, heads_kv, seq, d] or
// [heads_kv, seq, d], C-contiguous numpy arrays (the package converts torch tensors and other
// layouts): the layouts of quantize_kv_tensor, whose codes and scales attention() then reads.
attune::Problem kv_problem(std::string_view dtype, std::optional<bool> is_k, const PyArrayObject* a, const char* name,
                           bool codes) {
  const std::optional<Dtype> kv = attune::parse_dtype(dtype);
  if (!kv || !attune::is_quantized(*kv))
    bad_shape("dtype: must be int8, int8_kc, fp8_e4m3, fp8_e5m2 or int4, got '" + std::string(dtype) + "'");
  if (*kv == Dtype::int8_kc && !is_k)
    bad_shape("is_k: int8_kc scales K per channel and V per token: pass is_k=True (K) or is_k=False (V)");
  const int n = PyArray_NDIM(a);
  const npy_intp* shape = PyArray_DIMS(a);
  std::vector<std::int64_t> dims(shape, shape + n);
  if (n != 3 && n != 4)
    bad_shape(std::string(name) + ": expected [heads_kv, seq, d] or [batch, heads_kv, seq, d], got shape " + shape_text(dims));
  for (std::int64_t x : dims)
    if (x < 1) bad_shape(std::string(name) + ": every axis must be >= 1, got shape " + shape_text(dims));
  const int o = n - 3;
  attune::Problem p;
  p.batch = n == 4 ? dims[0] : 1;
  p.heads_q = p.heads_kv = dims[static_cast<std::size_t>(o)];
  p.seq_q = p.seq_kv = dims[static_cast<std::size_t>(o + 1)];
  p.d_k = p.d_v = dims[static_cast<std::size_t>(o + 2)] * (codes && *kv == Dtype::int4 ? 2 : 1);
  p.kv_dtype = *kv;
  if (*kv == Dtype::int4 && p.d_k % 32 != 0)
    bad_shape(std::string(name) + ": int4 needs d a multiple of 32 (groups of 32 along d), got d = " + std::to_string(p.d_k));
  p.validate();
  return p;
}

nb::object numpy_empty(const std::vector<std::int64_t>& shape, int type) {
  npy_intp dims[kMaxDims];
  for (std::size_t i = 0; i < shape.size(); ++i) dims[i] = shape[i];
  PyObject* a = PyArray_Empty(static_cast<int>(shape.size()), dims, PyArray_DescrFromType(type), 0);
  if (!a) throw nb::python_error();
  return nb::steal(a);
}

PyArrayObject* contiguous_numpy(nb::handle h, const char* name, std::initializer_list<int> types, const char* what) {
  if (!PyArray_Check(h.ptr())) type_error(std::string(name) + ": must be a numpy array or a CPU torch tensor, got " + type_name(h.ptr()));
  auto* a = reinterpret_cast<PyArrayObject*>(h.ptr());
  if (std::find(types.begin(), types.end(), PyArray_TYPE(a)) == types.end())
    type_error(std::string(name) + ": element type must be " + what + ", got numpy " +
               str_of(reinterpret_cast<PyObject*>(PyArray_DESCR(a))));
  if (!PyArray_IS_C_CONTIGUOUS(a) || !PyArray_ISALIGNED(a) || !PyArray_ISNOTSWAPPED(a))
    bad_shape(std::string(name) + ": must be C-contiguous");  // the package passes contiguous copies
  return a;
}

void* data_of(const nb::object& a) { return PyArray_DATA(reinterpret_cast<PyArrayObject*>(a.ptr())); }

nb::tuple quantize_kv(nb::handle x, std::string_view dtype, std::optional<bool> is_k) {
  PyArrayObject* a = contiguous_numpy(x, "x", {NPY_FLOAT32}, "float32");
  const attune::Problem p = kv_problem(dtype, is_k, a, "x", false);
  const bool k = is_k.value_or(true);
  const auto* values = static_cast<const float*>(PyArray_DATA(a));
  const std::int64_t count = p.k_elements();
  for (std::int64_t i = 0; i < count; ++i)
    if (!std::isfinite(values[i]))
      bad_shape("x: element " + std::to_string(i) + " is " + std::to_string(values[i]) + ": only finite values can be quantized");
  const Dtype kv = p.kv_type();
  std::vector<std::int64_t> shape(PyArray_DIMS(a), PyArray_DIMS(a) + PyArray_NDIM(a));
  shape.back() = static_cast<std::int64_t>(attune::row_bytes(kv, p.d_k));
  nb::object codes = numpy_empty(shape, kv == Dtype::int8 || kv == Dtype::int8_kc ? NPY_INT8 : NPY_UINT8);
  nb::object scales = numpy_empty(scale_shape(p, k, PyArray_NDIM(a) == 4), kv == Dtype::int4 ? NPY_FLOAT16 : NPY_FLOAT32);
  {
    nb::gil_scoped_release release;
    attune::quantize_kv_tensor(p, k, values, data_of(codes), data_of(scales));
  }
  return nb::make_tuple(codes, scales);
}

nb::object dequantize_kv(nb::handle codes, nb::handle scales, std::string_view dtype, std::optional<bool> is_k) {
  PyArrayObject* c = contiguous_numpy(codes, "codes", {NPY_INT8, NPY_UINT8}, "int8 or uint8");
  const attune::Problem p = kv_problem(dtype, is_k, c, "codes", true);
  const bool k = is_k.value_or(true);
  const Dtype kv = p.kv_type();
  PyArrayObject* s = kv == Dtype::int4 ? contiguous_numpy(scales, "scales", {NPY_FLOAT16}, "float16 (int4)")
                                       : contiguous_numpy(scales, "scales", {NPY_FLOAT32}, "float32");
  const std::vector<std::int64_t> want = scale_shape(p, k, PyArray_NDIM(c) == 4);
  const std::vector<std::int64_t> got(PyArray_DIMS(s), PyArray_DIMS(s) + PyArray_NDIM(s));
  if (got != want)
    bad_shape("scales: shape " + shape_text(got) + " does not match these " + std::string(attune::to_string(kv)) +
              " codes' " + (k ? "K" : "V") + " scales " + shape_text(want) + " (docs/quantized-kv.md)");
  std::vector<std::int64_t> shape(PyArray_DIMS(c), PyArray_DIMS(c) + PyArray_NDIM(c));
  shape.back() = p.d_k;
  nb::object x = numpy_empty(shape, NPY_FLOAT32);
  {
    nb::gil_scoped_release release;
    attune::dequantize_kv_tensor(p, k, PyArray_DATA(c), PyArray_DATA(s), static_cast<float*>(data_of(x)));
  }
  return x;
}

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
  // attention, workspace_bytes and resolve take the same arguments (with_args, Args).
  const auto def_attention_like = [&m](const char* name, auto* fn, const char* doc) {
    m.def(name, fn, "q"_a, "k"_a, "v"_a, nb::kw_only(), "causal"_a = false, "scale"_a.none() = nb::none(),
          "kernel"_a = "auto", "isa"_a.none() = nb::none(), "threads"_a.none() = nb::none(), "block_q"_a = 0,
          "block_kv"_a = 0, "kv_splits"_a = 0, "max_memory"_a = 0, "out"_a.none() = nb::none(),
          "causal_align"_a = "bottom_right", "window"_a = 0, "softcap"_a = 0.0, "mask"_a.none() = nb::none(),
          "alibi_slopes"_a.none() = nb::none(), "sinks"_a.none() = nb::none(), "cu_seqlens_q"_a.none() = nb::none(),
          "cu_seqlens_kv"_a.none() = nb::none(), "top_k"_a = 0, "kv_dtype"_a.none() = nb::none(),
          "k_scales"_a.none() = nb::none(), "v_scales"_a.none() = nb::none(), doc);
  };
  def_attention_like("attention", &with_args<attention_call>, kAttentionDoc);
  def_attention_like("workspace_bytes", &with_args<workspace_bytes>,
                     "Bytes of working memory attention() would allocate for these tensors and arguments.");
  def_attention_like("resolve", &with_args<resolve>,
                     "What attention() would run: {\"kernel\", \"isa\", \"block_q\", \"block_kv\", \"threads\", "
                     "\"kv_splits\", \"micro\", \"strided\"} (\"strided\": the tensors are read in place with their strides).");
  m.def("paged_attention", &paged_attention_call, "q"_a, "k_cache"_a, "v_cache"_a, "block_table"_a, "seq_lens"_a,
        "cu_seqlens_q"_a, nb::kw_only(), "scale"_a.none() = nb::none(), "causal"_a = true, "window"_a = 0,
        "softcap"_a = 0.0, "alibi_slopes"_a.none() = nb::none(), "sinks"_a.none() = nb::none(),
        "kv_dtype"_a.none() = nb::none(), "k_scales"_a.none() = nb::none(), "v_scales"_a.none() = nb::none(),
        "kernel"_a = "auto", "threads"_a.none() = nb::none(), "out"_a.none() = nb::none(), "layout"_a = "heads_first",
        kPagedAttentionDoc);
  m.def("paged_append", &paged_append_call, "k_cache"_a, "v_cache"_a, "key"_a, "value"_a, "slot_mapping"_a,
        nb::kw_only(), "k_scales"_a.none() = nb::none(), "v_scales"_a.none() = nb::none(),
        "kv_dtype"_a.none() = nb::none(), "layout"_a = "heads_first", "threads"_a.none() = nb::none(), kPagedAppendDoc);
  m.def("_sdpa", &sdpa_call, "q"_a, "k"_a, "v"_a, "mask"_a.none(), "is_causal"_a, "scale"_a.none(), "enable_gqa"_a,
        "sinks"_a.none() = nb::none(), "softcap"_a = 0.0f);
  m.def("quantize_kv", &quantize_kv, "x"_a, "dtype"_a, "is_k"_a.none());
  m.def("dequantize_kv", &dequantize_kv, "codes"_a, "scales"_a, "dtype"_a, "is_k"_a.none());
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
    return dict_of(field("races", s.races), field("candidates", s.candidates), field("rejected", s.rejected),
                   field("changed", s.changed), field("total_ms", s.total_ms), field("max_ms", s.max_ms));
  });
#ifdef ATTUNE_WITH_BLAS
  m.def("mha", &mha, "x"_a, "wq"_a, "wk"_a, "wv"_a, "wo"_a, "y"_a, "heads_q"_a, "heads_kv"_a.none(), "causal"_a,
        "scale"_a.none(), "kernel"_a, "isa"_a.none(), "threads"_a.none(), "max_workspace_bytes"_a);
#endif
}
