// A minimal application on an installed libhepzoo (see CMakeLists.txt next to it): loads a zoo release, runs it
// on inputs read from a file, prints every output.
//
//   hepzoo_consumer RELEASE_DIR FEATURES.f32 OFFSETS   MLPF: element rows [N, F] + offsets "0,37,37,101" (B+1
//                                                      values, the ragged layout), through Session::runElements
//   hepzoo_consumer RELEASE_DIR CONTEXT.f32 SEED       flash-sim: context rows [N, C], through Session::sample
//
// Input files: raw little-endian float32, C order, no header; F (or C) is the card's feature count, N follows
// from the file size. Output, parseable line by line:
//   model NAME VERSION FAMILY
//   output NAME D0 D1 ...      (its shape), then D0 lines of D1*... values each (%.9g: float32 round-trips)
//   end
// An error (a hepzoo::Error: bad release, bad input; or an unreadable file here) is printed on stderr as
// "hepzoo_consumer: <message>", exit code 1.
#include <hepzoo/hepzoo.hpp>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

namespace {

/// Rows of `width` float32 values from a raw file.
hepzoo::Tensor readRows(const std::string& path, std::int64_t width) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open");
  const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto row_bytes = static_cast<std::size_t>(width) * sizeof(float);
  if (bytes.size() % row_bytes != 0) {
    throw std::runtime_error(path + ": " + std::to_string(bytes.size()) + " bytes is not a whole number of rows of " +
                             std::to_string(width) + " float32 values");
  }
  hepzoo::Tensor t;
  t.shape = {static_cast<std::int64_t>(bytes.size() / row_bytes), width};
  t.data.resize(bytes.size() / sizeof(float));
  std::copy(bytes.begin(), bytes.end(), reinterpret_cast<char*>(t.data.data()));
  return t;
}

std::vector<std::int64_t> parseOffsets(const std::string& text) {
  std::vector<std::int64_t> offsets;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) offsets.push_back(std::stoll(item));
  return offsets;
}

/// The card's input that is neither noise nor a mask: MLPF features or flash-sim context.
const hepzoo::TensorSpec& dataInput(const hepzoo::ModelCard& card) {
  for (const hepzoo::TensorSpec& t : card.inputs)
    if (t.dtype == "float32" && !card.isNoise(t.name)) return t;
  throw std::runtime_error(card.path.string() + ": no float32 data input");
}

void print(const hepzoo::Outputs& outputs) {
  for (const auto& [name, t] : outputs) {
    std::printf("output %s", name.c_str());
    for (std::int64_t d : t.shape) std::printf(" %lld", static_cast<long long>(d));
    std::printf("\n");
    const std::size_t rows = static_cast<std::size_t>(t.shape.at(0));
    const std::size_t width = rows ? t.data.size() / rows : 0;
    for (std::size_t r = 0; r < rows; ++r) {
      for (std::size_t i = 0; i < width; ++i) std::printf(i ? " %.9g" : "%.9g", static_cast<double>(t.data[r * width + i]));
      std::printf("\n");
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: hepzoo_consumer RELEASE_DIR FEATURES.f32 OFFSETS (mlpf) | RELEASE_DIR CONTEXT.f32 SEED (flashsim)\n";
    return 2;
  }
  try {
    const hepzoo::Session session(argv[1]);  // card checked, sha256 of the model checked
    const hepzoo::ModelCard& card = session.card();
    const hepzoo::Tensor rows = readRows(argv[2], dataInput(card).shape.back());
    const hepzoo::Outputs outputs = card.family == "mlpf" ? session.runElements(rows.view(), parseOffsets(argv[3]))
                                                          : session.sample(rows.view(), std::stoull(argv[3]));
    std::printf("model %s %s %s\n", card.name.c_str(), card.version.c_str(), card.family.c_str());
    print(outputs);
    std::printf("end\n");
    return 0;
  } catch (const std::exception& e) {  // hepzoo::Error, or a bad file / argument here
    std::cerr << "hepzoo_consumer: " << e.what() << "\n";
    return 1;
  }
}
