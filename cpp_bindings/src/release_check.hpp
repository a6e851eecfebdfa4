// Private to libhepzoo (not installed): loading a release and checking that its ONNX graph is the one its card
// describes. Used by session.cpp; implemented in release_check.cpp.
#pragma once

#include <onnxruntime_cxx_api.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "hepzoo/card.hpp"

namespace hepzoo {
namespace detail {

/// A float32 output of the graph: its name and the fixed axes after the symbolic ones.
struct OutputSlot {
  std::string name;
  Shape tail;
  std::int64_t width = 1;  // elements per row (product of tail)
};

/// A release folder whose card was read and whose model bytes have the sha256 the card records.
struct VerifiedModel {
  std::filesystem::path folder;  // canonical
  ModelCard card;
  std::filesystem::path onnx_path;
  std::vector<char> bytes;  // the very bytes that were hashed: load these, not the file again
};

/// The graph's interface as the card names it (graph order).
struct GraphInterface {
  std::vector<std::string> input_names;
  std::vector<std::string> output_names;
  std::vector<OutputSlot> outputs;
  // MLPF
  std::string features_name;
  std::string mask_name;  // empty: the graph takes no mask
  std::int64_t n_features = 0;
};

/// "[a, b, c]".
std::string join(const std::vector<std::string>& items);

/// `release`: a release folder or its card.json. Reads the card, checks that the ONNX file lies inside the folder
/// and has the recorded sha256. Errors are one-line hepzoo::Errors naming the file at fault.
VerifiedModel loadVerifiedModel(const std::filesystem::path& release);

/// Every graph input and output is in the card, with its element type and the sizes of its fixed axes, and the
/// family's layout (MLPF: features [batch, elements, F] + optional bool mask; flash-sim: float32 [batch, ...]).
GraphInterface checkInterface(const Ort::Session& session, const ModelCard& card, const std::filesystem::path& folder);

}  // namespace detail
}  // namespace hepzoo
