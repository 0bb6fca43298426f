// The .npy reader and writer: round trips and every malformed input the CLI may meet.
#include <attune/attune.hpp>

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

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

TEST(Npy, FailedWriteLeavesNoFileBehind) {
  EXPECT_THROW(attune::npy::write("/nonexistent-dir/x.npy", {1}, nullptr), attune::IoError);
  EXPECT_THROW(attune::npy::read("/nonexistent-dir/x.npy"), attune::IoError);
}

}  // namespace
