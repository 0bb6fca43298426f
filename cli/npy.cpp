// A strict reader and an atomic writer for .npy files. The reader accepts exactly
// little-endian C-order float32 ('<f4'), float16 ('<f2') and bfloat16 (ml_dtypes' '<V2') (and,
// where asked for, masks, quantized codes and int32/int64 indices) and checks every size before
// allocating.
#include "npy.hpp"

#include <attune/error.hpp>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <string_view>
#include <utility>
#include <unistd.h>

namespace attune::npy {
namespace {

constexpr unsigned char kMagic[] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
// Far above any real attention tensor, far below what would overflow size arithmetic.
constexpr std::int64_t kMaxElements = std::int64_t{1} << 40;

[[noreturn]] void bad(const std::string& why) { throw IoError(why); }

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n' || s.back() == ','))
    s.remove_suffix(1);
  return s;
}

// Finds the value text of 'key' in a Python dict literal such as
// {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
std::string_view dict_value(std::string_view dict, std::string_view key) {
  std::string quoted1(1, '\''), quoted2(1, '"');
  quoted1.append(key).push_back('\'');
  quoted2.append(key).push_back('"');
  auto pos = dict.find(quoted1);
  std::size_t len = quoted1.size();
  if (pos == std::string_view::npos) {
    pos = dict.find(quoted2);
    len = quoted2.size();
  }
  if (pos == std::string_view::npos) bad("malformed .npy header: no '" + std::string(key) + "' key");
  auto rest = dict.substr(pos + len);
  rest = trim(rest);
  if (rest.empty() || rest.front() != ':') bad("malformed .npy header: no ':' after '" + std::string(key) + "'");
  rest.remove_prefix(1);
  rest = trim(rest);
  std::size_t end = 0;
  if (!rest.empty() && rest.front() == '(') {
    end = rest.find(')');
    if (end == std::string_view::npos) bad("malformed .npy header: unterminated shape tuple");
    return rest.substr(0, end + 1);
  }
  if (!rest.empty() && (rest.front() == '\'' || rest.front() == '"')) {
    end = rest.find(rest.front(), 1);
    if (end == std::string_view::npos) bad("malformed .npy header: unterminated string for '" + std::string(key) + "'");
    return rest.substr(0, end + 1);
  }
  end = rest.find_first_of(",}");
  if (end == std::string_view::npos) bad("malformed .npy header: unterminated value for '" + std::string(key) + "'");
  return trim(rest.substr(0, end));
}

std::vector<std::int64_t> parse_shape(std::string_view text) {
  // text is "(...)"
  text = text.substr(1, text.size() - 2);
  std::vector<std::int64_t> shape;
  std::int64_t elements = 1;
  while (true) {
    text = trim(text);
    while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
    if (text.empty()) break;
    std::size_t i = 0;
    if (text[0] == '-') bad("invalid .npy shape: negative dimension");
    std::int64_t dim = 0;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
      if (dim > (std::numeric_limits<std::int64_t>::max() - 9) / 10) bad("invalid .npy shape: dimension too large");
      dim = dim * 10 + (text[i] - '0');
      ++i;
    }
    // Python writes 3L on some old versions.
    if (i < text.size() && text[i] == 'L') ++i;
    if (i == 0) bad("invalid .npy shape: '" + std::string(text.substr(0, 20)) + "' is not a dimension");
    text.remove_prefix(i);
    text = trim(text);
    if (!text.empty()) {
      if (text.front() != ',') bad("invalid .npy shape: expected ',' between dimensions");
      text.remove_prefix(1);
    }
    if (dim != 0 && elements > kMaxElements / dim) bad("invalid .npy shape: more than 2^40 elements");
    elements *= dim;
    shape.push_back(dim);
    if (shape.size() > 32) bad("invalid .npy shape: more than 32 dimensions");
  }
  return shape;
}

// The element type a header's descr names, or IoError. Only the little-endian forms: a '>'
// or '|' file would be misread byte for byte. `boolean` (masks only) also takes one-byte
// booleans ('|b1', NumPy's bool) and unsigned bytes ('|u1'), reported as fp32 with boolean set.
// kCodes (parse_codes): one-byte codes of a quantized K/V, int8 ('|i1') or uint8 ('|u1'), kept as
// they are (reported as int8).
bool kCodesSentinel = false;
bool* const kCodes = &kCodesSentinel;

// A header string's text without its quotes (nothing when it is not a quoted string).
std::optional<std::string_view> unquoted(std::string_view descr) {
  if (descr.size() >= 2 && (descr.front() == '\'' || descr.front() == '"') && descr.back() == descr.front())
    return descr.substr(1, descr.size() - 2);
  return std::nullopt;
}

Dtype descr_dtype(std::string_view descr, bool* boolean = nullptr) {
  if (const auto quoted = unquoted(descr)) {
    const std::string_view text = *quoted;
    if (boolean == kCodes) {
      if (text == "|i1" || text == "|u1") return Dtype::int8;
      bad("unsupported .npy dtype " + std::string(descr) + " for quantized K/V codes: attune reads int8 ('|i1') "
          "and uint8 ('|u1')");
    }
    if (text == "<f4") return Dtype::fp32;
    if (text == "<f2" && boolean == nullptr) return Dtype::fp16;
    if (text == "<V2" && boolean == nullptr) return Dtype::bf16;  // how np.save writes an ml_dtypes.bfloat16 array
    if ((text == "|b1" || text == "|u1") && boolean != nullptr) {
      *boolean = true;
      return Dtype::fp32;
    }
  }
  if (boolean != nullptr)
    bad("unsupported .npy dtype " + std::string(descr) + " for a mask: attune reads bool ('|b1'), uint8 ('|u1') "
        "and float32 ('<f4')");
  bad("unsupported .npy dtype " + std::string(descr) +
      ": attune reads little-endian float32 ('<f4'), float16 ('<f2') and bfloat16 ('<V2', as ml_dtypes saves "
      "it)");
}

}  // namespace

std::int64_t TypedArray::elements() const {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

namespace {

// The shape and data bytes of a .npy image. `element` reads the header's quoted descr (throwing
// IoError for a type the caller does not take) and returns the size of one element in bytes.
struct RawImage {
  std::vector<std::int64_t> shape;
  std::vector<std::byte> bytes;
};

template <typename Element>
RawImage parse_raw(const unsigned char* bytes, std::size_t size, const Element& element) {
  if (size == 0) bad("empty .npy file");
  if (size < 10 || std::memcmp(bytes, kMagic, sizeof kMagic) != 0) bad("not a .npy file (bad magic)");
  const int major = bytes[6];
  std::size_t header_len = 0, offset = 0;
  if (major == 1) {
    header_len = bytes[8] | (std::size_t{bytes[9]} << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (size < 12) bad("truncated .npy header");
    header_len = bytes[8] | (std::size_t{bytes[9]} << 8) | (std::size_t{bytes[10]} << 16) |
                 (std::size_t{bytes[11]} << 24);
    offset = 12;
  } else {
    bad("unsupported .npy format version " + std::to_string(major));
  }
  if (header_len > size - offset) bad("truncated .npy file: header length past the end");
  const std::string_view header(reinterpret_cast<const char*>(bytes + offset), header_len);
  const auto open = header.find('{');
  const auto close = header.rfind('}');
  if (open == std::string_view::npos || close == std::string_view::npos || close < open)
    bad("malformed .npy header: no dict");
  const auto dict = header.substr(open, close - open + 1);

  RawImage image;
  const std::size_t element_bytes = element(dict_value(dict, "descr"));
  const auto fortran = dict_value(dict, "fortran_order");
  if (fortran == "True") bad("unsupported .npy layout: Fortran order (save with C order)");
  if (fortran != "False") bad("malformed .npy header: fortran_order is " + std::string(fortran));
  const auto shape_text = dict_value(dict, "shape");
  if (shape_text.empty() || shape_text.front() != '(') bad("malformed .npy header: shape is not a tuple");

  image.shape = parse_shape(shape_text);  // at most 2^40 elements: the byte count cannot overflow
  std::size_t elements = 1;
  for (auto d : image.shape) elements *= static_cast<std::size_t>(d);
  const std::size_t data_bytes = elements * element_bytes;
  const std::size_t available = size - offset - header_len;
  if (available < data_bytes) {
    bad("truncated .npy file: shape needs " + std::to_string(data_bytes) + " data bytes, file has " +
        std::to_string(available));
  }
  if (available > data_bytes) bad("malformed .npy file: " + std::to_string(available - data_bytes) + " bytes past the data");
  const auto* data = reinterpret_cast<const std::byte*>(bytes + offset + header_len);
  image.bytes.assign(data, data + data_bytes);
  return image;
}

// parse_typed and parse_mask: `boolean` non-null accepts the mask types (see descr_dtype).
TypedArray parse_image(const unsigned char* bytes, std::size_t size, bool* boolean) {
  TypedArray array;
  RawImage image = parse_raw(bytes, size, [&](std::string_view descr) {
    array.dtype = descr_dtype(descr, boolean);
    return boolean != nullptr && (boolean == kCodes || *boolean) ? std::size_t{1} : size_of(array.dtype);
  });
  array.shape = std::move(image.shape);
  array.bytes = std::move(image.bytes);
  return array;
}

}  // namespace

TypedArray parse_typed(const unsigned char* bytes, std::size_t size) { return parse_image(bytes, size, nullptr); }

TypedArray parse_codes(const unsigned char* bytes, std::size_t size) { return parse_image(bytes, size, kCodes); }

MaskArray parse_mask(const unsigned char* bytes, std::size_t size) {
  bool boolean = false;
  TypedArray typed = parse_image(bytes, size, &boolean);
  MaskArray mask;
  mask.shape = std::move(typed.shape);
  mask.boolean = boolean;
  mask.bytes = std::move(typed.bytes);
  if (boolean)  // NumPy's bool is 0 or 1, uint8 any byte: both mean "visible" when non-zero
    for (std::byte& b : mask.bytes) b = b != std::byte{0} ? std::byte{1} : std::byte{0};
  return mask;
}

IndexArray parse_indices(const unsigned char* bytes, std::size_t size) {
  IndexArray array;
  RawImage image = parse_raw(bytes, size, [&](std::string_view descr) {
    const std::string_view text = unquoted(descr).value_or("");
    if (text == "<i4" || text == "<i8") {
      array.bits = text == "<i4" ? 32 : 64;
      return std::size_t{text == "<i4" ? 4u : 8u};
    }
    bad("unsupported .npy dtype " + std::string(descr) + " for indices: attune reads int32 ('<i4') and int64 ('<i8')");
  });
  array.shape = std::move(image.shape);
  const std::size_t n = image.bytes.size() / static_cast<std::size_t>(array.bits / 8);
  array.values.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    if (array.bits == 32) {
      std::int32_t x;
      std::memcpy(&x, image.bytes.data() + i * 4, 4);
      array.values[i] = x;
    } else {
      std::memcpy(&array.values[i], image.bytes.data() + i * 8, 8);
    }
  }
  return array;
}

Array parse(const unsigned char* bytes, std::size_t size) {
  TypedArray typed = parse_typed(bytes, size);
  if (typed.dtype != Dtype::fp32) {
    bad(std::string("unsupported .npy dtype ") + (typed.dtype == Dtype::fp16 ? "'<f2'" : "'<V2'") +
        ": this input must be float32 little-endian ('<f4')");
  }
  Array array;
  array.shape = std::move(typed.shape);
  array.data.resize(typed.bytes.size() / sizeof(float));
  if (!typed.bytes.empty()) std::memcpy(array.data.data(), typed.bytes.data(), typed.bytes.size());
  return array;
}

namespace {

std::vector<unsigned char> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) bad("cannot open '" + path + "': " + std::strerror(errno));
  // A directory opens fine on Linux and then reports a bogus size (a huge allocation follows),
  // so only regular files (or links to one) are read.
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) bad("cannot read '" + path + "': not a regular file");
  in.seekg(0, std::ios::end);
  const auto end = in.tellg();
  if (end < 0) bad("cannot read '" + path + "': not a regular file");
  in.seekg(0);
  std::vector<unsigned char> bytes(static_cast<std::size_t>(end));
  if (!bytes.empty() && !in.read(reinterpret_cast<char*>(bytes.data()), end)) bad("cannot read '" + path + "'");
  return bytes;
}

// Runs a parser on the file's bytes; errors are prefixed with the path.
template <typename Parse>
auto read_with(const std::string& path, Parse parse_image) {
  const auto bytes = read_file(path);
  try {
    return parse_image(bytes.data(), bytes.size());
  } catch (const IoError& e) {
    throw IoError(path + ": " + e.what());
  }
}

}  // namespace

Array read(const std::string& path) { return read_with(path, parse); }

TypedArray read_typed(const std::string& path) { return read_with(path, parse_typed); }

TypedArray read_codes(const std::string& path) { return read_with(path, parse_codes); }

MaskArray read_mask(const std::string& path) { return read_with(path, parse_mask); }

IndexArray read_indices(const std::string& path) { return read_with(path, parse_indices); }

void write(const std::string& path, const std::vector<std::int64_t>& shape, const float* data) {
  write(path, shape, Dtype::fp32, data);
}

void write(const std::string& path, const std::vector<std::int64_t>& shape, Dtype dtype, const void* data) {
  const char* descr = dtype == Dtype::fp32 ? "<f4" : dtype == Dtype::fp16 ? "<f2" : "<V2";
  std::ostringstream dict;
  dict << "{'descr': '" << descr << "', 'fortran_order': False, 'shape': (";
  std::int64_t elements = 1;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    dict << shape[i] << (shape.size() == 1 || i + 1 < shape.size() ? "," : "");
    if (i + 1 < shape.size()) dict << " ";
    elements *= shape[i];
  }
  dict << "), }";
  std::string header = dict.str();
  // Pad with spaces so that magic + version + length + header + '\n' is a multiple of 64.
  const std::size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');

  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) bad("cannot write '" + path + "': " + std::strerror(errno));
  const unsigned char prefix[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0,
                                    static_cast<unsigned char>(header.size() & 0xff),
                                    static_cast<unsigned char>(header.size() >> 8)};
  bool ok = std::fwrite(prefix, 1, sizeof prefix, f) == sizeof prefix &&
            std::fwrite(header.data(), 1, header.size(), f) == header.size() &&
            (elements == 0 ||
             std::fwrite(data, size_of(dtype), static_cast<std::size_t>(elements), f) ==
                 static_cast<std::size_t>(elements));
  ok = (std::fflush(f) == 0) && ok;
  ok = (::fsync(::fileno(f)) == 0) && ok;
  const int saved = errno;
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = ok ? errno : saved;
    std::remove(tmp.c_str());
    bad("cannot write '" + path + "': " + std::strerror(err));
  }
}

}  // namespace attune::npy
