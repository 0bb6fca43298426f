// The .npy reader and writer: round trips and every malformed input the CLI may meet.
#include "npy.hpp"

#include <attune/attune.hpp>

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <tuple>
#include <unistd.h>

namespace {

std::vector<unsigned char> image(const std::string& dict, std::size_t data_bytes, int version = 1) {
  std::string header = dict;
  const std::size_t prefix = version == 1 ? 10 : 12;
  header.append((64 - (prefix + header.size() + 1) % 64) % 64, ' ');
  header.push_back('\n');
  std::vector<unsigned char> out = {0x93, 'N', 'U', 'M', 'P', 'Y', static_cast<unsigned char>(version), 0};
  const std::size_t n = header.size();
  out.push_back(n & 0xff);
  out.push_back((n >> 8) & 0xff);
  if (version != 1) {
    out.push_back((n >> 16) & 0xff);
    out.push_back((n >> 24) & 0xff);
  }
  out.insert(out.end(), header.begin(), header.end());
  out.resize(out.size() + data_bytes, 0);
  return out;
}

void expect_error(const std::vector<unsigned char>& bytes, const std::string& needle) {
  try {
    attune::npy::parse(bytes.data(), bytes.size());
    FAIL() << "accepted; expected: " << needle;
  } catch (const attune::IoError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

const std::string kGood = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";

TEST(Npy, ParsesAValidImage) {
  auto a = attune::npy::parse(image(kGood, 24).data(), image(kGood, 24).size());
  EXPECT_EQ(a.shape, (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(a.data.size(), 6u);
  auto v2 = image(kGood, 24, 2);
  EXPECT_EQ(attune::npy::parse(v2.data(), v2.size()).shape.size(), 2u);
  auto scalar_shape = image("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", 16);
  EXPECT_EQ(attune::npy::parse(scalar_shape.data(), scalar_shape.size()).shape, (std::vector<std::int64_t>{4}));
}

TEST(Npy, RejectsMalformedImages) {
  expect_error({}, "empty");
  expect_error({'P', 'K', 3, 4, 0, 0, 0, 0, 0, 0, 0}, "bad magic");
  auto truncated = image(kGood, 23);
  expect_error(truncated, "truncated");
  auto past = image(kGood, 0);
  past[8] = 0xff;
  past[9] = 0xff;
  expect_error(past, "header length past the end");
  expect_error(image("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", 48), "dtype");
  expect_error(image("{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }", 24), "dtype");
  expect_error(image("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", 24), "dtype");
  expect_error(image("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", 24), "Fortran");
  expect_error(image("{'descr': '<f4', 'fortran_order': False, 'shape': (-2, 3), }", 24), "negative");
  expect_error(image("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904,), }", 0),
               "2^40");
  expect_error(image("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", 0),
               "too large");
  expect_error(image("{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }", 24), "not a dimension");
  expect_error(image("{'descr': '<f4', 'fortran_order': False }", 0), "'shape'");
  expect_error(image("no dict here", 0), "no dict");
  expect_error(image("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, }", 24), "unterminated");
  auto version9 = image(kGood, 24);
  version9[6] = 9;
  expect_error(version9, "version");
  expect_error(image(kGood, 28), "past the data");
}

// Index files (block tables): int32 and int64, widened to int64; nothing else.
TEST(Npy, ParsesInt32AndInt64Indices) {
  auto i4 = image("{'descr': '<i4', 'fortran_order': False, 'shape': (2, 2), }", 16);
  const std::int32_t v4[] = {0, -1, 7, 2147483647};
  std::memcpy(i4.data() + i4.size() - sizeof v4, v4, sizeof v4);
  const auto a = attune::npy::parse_indices(i4.data(), i4.size());
  EXPECT_EQ(a.bits, 32);
  EXPECT_EQ(a.shape, (std::vector<std::int64_t>{2, 2}));
  EXPECT_EQ(a.values, (std::vector<std::int64_t>{0, -1, 7, 2147483647}));
  auto i8 = image("{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }", 24);
  const std::int64_t v8[] = {std::int64_t{1} << 40, -5, 3};
  std::memcpy(i8.data() + i8.size() - sizeof v8, v8, sizeof v8);
  const auto b = attune::npy::parse_indices(i8.data(), i8.size());
  EXPECT_EQ(b.bits, 64);
  EXPECT_EQ(b.values, (std::vector<std::int64_t>{std::int64_t{1} << 40, -5, 3}));
  for (const char* descr : {"<f4", "<i2", "<u4", ">i4", "|i1", "<u8"}) {
    const auto bad = image(std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (2,), }", 8);
    EXPECT_THROW(attune::npy::parse_indices(bad.data(), bad.size()), attune::IoError) << descr;
  }
  const auto short_i8 = image("{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", 8);
  EXPECT_THROW(attune::npy::parse_indices(short_i8.data(), short_i8.size()), attune::IoError);
}

TEST(Npy, WriteThenReadRoundTrips) {
  const auto dir = std::filesystem::temp_directory_path() / ("attune_npy_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "x.npy").string();
  std::vector<float> data = {1.5f, -2.0f, 3.25f, 0.0f, 1e-30f, 7.0f};
  attune::npy::write(path, {1, 2, 3}, data.data());
  const auto a = attune::npy::read(path);
  EXPECT_EQ(a.shape, (std::vector<std::int64_t>{1, 2, 3}));
  EXPECT_EQ(a.data, data);
  // The header is padded so the data starts on a 64-byte boundary, as NumPy writes it.
  EXPECT_EQ((std::filesystem::file_size(path) - 24) % 64, 0u);
  std::filesystem::remove_all(dir);
}

// 16-bit bit patterns that a conversion would change or lose: -0, the smallest subnormal, the
// largest finite value, +-inf, a NaN with a payload, plus ordinary values.
const std::vector<std::uint16_t> kFp16Bits = {0x0000, 0x8000, 0x0001, 0x7bff, 0x7c00,
                                              0xfc00, 0x7e01, 0x3c00, 0xc4d2};
const std::vector<std::uint16_t> kBf16Bits = {0x0000, 0x8000, 0x0001, 0x7f7f, 0x7f80,
                                              0xff80, 0x7fc1, 0x3f80, 0xc0a5};

std::vector<unsigned char> image16(const std::string& descr, const std::vector<std::uint16_t>& bits) {
  auto out = image(
      "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (" + std::to_string(bits.size()) + ",), }",
      0);
  for (std::uint16_t b : bits) {  // little-endian, as the file stores it
    out.push_back(static_cast<unsigned char>(b & 0xff));
    out.push_back(static_cast<unsigned char>(b >> 8));
  }
  return out;
}

std::vector<std::uint16_t> bits_of(const attune::npy::TypedArray& a) {
  std::vector<std::uint16_t> bits(a.bytes.size() / 2);
  std::memcpy(bits.data(), a.bytes.data(), a.bytes.size());
  return bits;
}

TEST(Npy, ParsesFloat16AndBfloat16BitExact) {
  const auto f2 =
      attune::npy::parse_typed(image16("<f2", kFp16Bits).data(), image16("<f2", kFp16Bits).size());
  EXPECT_EQ(f2.dtype, attune::Dtype::fp16);
  EXPECT_EQ(f2.shape, (std::vector<std::int64_t>{static_cast<std::int64_t>(kFp16Bits.size())}));
  EXPECT_EQ(bits_of(f2), kFp16Bits);
  // '<V2' is how np.save writes ml_dtypes.bfloat16; attune reads it as bf16.
  const auto v2 =
      attune::npy::parse_typed(image16("<V2", kBf16Bits).data(), image16("<V2", kBf16Bits).size());
  EXPECT_EQ(v2.dtype, attune::Dtype::bf16);
  EXPECT_EQ(bits_of(v2), kBf16Bits);
  // Double quotes and format 2.0 as for float32.
  auto quoted = image("{\"descr\": \"<f2\", \"fortran_order\": False, \"shape\": (2, 3), }", 12, 2);
  const auto q = attune::npy::parse_typed(quoted.data(), quoted.size());
  EXPECT_EQ(q.dtype, attune::Dtype::fp16);
  EXPECT_EQ(q.elements(), 6);
  EXPECT_EQ(q.bytes.size(), 12u);
  // float32 through the typed reader keeps its bits too.
  auto f4 = image(kGood, 0);
  const float values[6] = {1.0f, -0.0f, 3.5f, 1e-40f, -7.25f, 65504.0f};
  const auto* raw = reinterpret_cast<const unsigned char*>(values);
  f4.insert(f4.end(), raw, raw + sizeof values);
  const auto a = attune::npy::parse_typed(f4.data(), f4.size());
  EXPECT_EQ(a.dtype, attune::Dtype::fp32);
  ASSERT_EQ(a.bytes.size(), sizeof values);
  EXPECT_EQ(std::memcmp(a.bytes.data(), values, sizeof values), 0);
}

TEST(Npy, Float32ReaderRefuses16BitFiles) {
  // read()/parse() stay float32-only for their callers (mha, bench, tests).
  expect_error(image16("<f2", kFp16Bits), "'<f2'");
  expect_error(image16("<V2", kBf16Bits), "'<V2'");
}

void expect_typed_error(const std::vector<unsigned char>& bytes, const std::string& needle) {
  try {
    attune::npy::parse_typed(bytes.data(), bytes.size());
    FAIL() << "accepted; expected: " << needle;
  } catch (const attune::IoError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Npy, RejectsMalformed16BitImages) {
  const std::string shape = "'fortran_order': False, 'shape': (2, 3), }";
  for (const char* descr : {">f2", "|V2", "<V4", "|V1", "<u2", "<i2", "f2", "<f2 ", "bfloat16"})
    expect_typed_error(image(std::string("{'descr': '") + descr + "', " + shape, 12), "dtype");
  expect_typed_error(image("{'descr': '<f2', " + shape, 11), "truncated");
  expect_typed_error(image("{'descr': '<V2', " + shape, 11), "truncated");
  expect_typed_error(image("{'descr': '<f2', " + shape, 24), "12 bytes past the data");  // float32-sized data
  expect_typed_error(image("{'descr': '<V2', 'fortran_order': True, 'shape': (2, 3), }", 12), "Fortran");
  expect_typed_error(image("{'descr': '<f2', 'fortran_order': False, 'shape': (4611686018427387904,), }", 0),
                     "2^40");
  expect_typed_error(image("{'descr': '<V2', 'fortran_order': False, 'shape': (2, -3), }", 12), "negative");
  // 2^40 elements of 2 bytes are accepted by the header check and refused by the data check.
  expect_typed_error(image("{'descr': '<f2', 'fortran_order': False, 'shape': (1099511627776,), }", 0),
                     "truncated");
}

TEST(Npy, Write16BitThenReadRoundTripsBitExact) {
  const auto dir = std::filesystem::temp_directory_path() / ("attune_npy16_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  for (const auto& [dtype, bits, descr] : {std::tuple{attune::Dtype::fp16, kFp16Bits, "'<f2'"},
                                           std::tuple{attune::Dtype::bf16, kBf16Bits, "'<V2'"}}) {
    const std::string path = (dir / (std::string(attune::to_string(dtype)) + ".npy")).string();
    const std::vector<std::int64_t> shape = {3, 1, static_cast<std::int64_t>(bits.size() / 3)};
    attune::npy::write(path, shape, dtype, bits.data());
    const auto a = attune::npy::read_typed(path);
    EXPECT_EQ(a.dtype, dtype);
    EXPECT_EQ(a.shape, shape);
    EXPECT_EQ(bits_of(a), bits);
    std::ifstream in(path, std::ios::binary);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_NE(text.find(std::string("'descr': ") + descr), std::string::npos) << text.substr(0, 64);
    EXPECT_EQ((text.size() - 2 * bits.size()) % 64, 0u);  // data on a 64-byte boundary
    EXPECT_THROW(attune::npy::read(path), attune::IoError);
  }
  // The float32 overload and the typed one with fp32 write the same bytes.
  const std::vector<float> data = {1.5f, -2.0f, 0.1f};
  attune::npy::write((dir / "a.npy").string(), {3}, data.data());
  attune::npy::write((dir / "b.npy").string(), {3}, attune::Dtype::fp32, data.data());
  std::ifstream a(dir / "a.npy", std::ios::binary), b(dir / "b.npy", std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(a), {}),
            std::string(std::istreambuf_iterator<char>(b), {}));
  std::filesystem::remove_all(dir);
}

TEST(Npy, FailedWriteLeavesNoFileBehind) {
  EXPECT_THROW(attune::npy::write("/nonexistent-dir/x.npy", {1}, nullptr), attune::IoError);
  EXPECT_THROW(attune::npy::read("/nonexistent-dir/x.npy"), attune::IoError);
  const std::uint16_t one = 0x3c00;
  EXPECT_THROW(attune::npy::write("/nonexistent-dir/x.npy", {1}, attune::Dtype::fp16, &one), attune::IoError);
  EXPECT_THROW(attune::npy::read_typed("/nonexistent-dir/x.npy"), attune::IoError);
}

}  // namespace
