// The part of a model card (card.json, DESIGN.md contract 3) that running a model needs.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "hepzoo/tensor.hpp"

namespace hepzoo {

/// One graph input or output. Symbolic axes ("batch", "elements") are -1 in `shape`, named in `axis_names`.
struct TensorSpec {
  std::string name;
  std::string dtype;                     ///< "float32" or "bool"
  Shape shape;                           ///< -1 for a symbolic axis
  std::vector<std::string> axis_names;   ///< the symbol of each axis ("" for fixed ones)
  std::vector<std::string> feature_names;///< names along the last axis (may be empty)

  /// Number of leading symbolic axes (1 for [batch, F], 2 for [batch, elements, F]).
  std::size_t symbolicPrefix() const;
  /// The fixed axes after the symbolic prefix ([20] for [batch, elements, 20], [] for [batch]).
  Shape tail() const;
  /// Name of feature `i` along the last axis, or "#i" without feature names.
  std::string featureName(std::int64_t i) const;
};

struct ModelCard {
  std::filesystem::path path;  ///< the card.json it was read from
  std::string name;
  std::string version;
  std::string family;  ///< "mlpf" or "flashsim"
  std::vector<TensorSpec> inputs;
  std::vector<TensorSpec> outputs;
  std::vector<std::string> noise_inputs;  ///< graph inputs to fill with standard-normal noise (flash-sim)
  std::int64_t element_granularity = 1;
  std::vector<std::int64_t> size_buckets;
  std::string onnx_file;    ///< relative to the card's folder
  std::string onnx_sha256;  ///< 64 lowercase hex digits
  double atol = 0.0;        ///< export tolerance: |a - b| <= atol + rtol * |b|
  double rtol = 0.0;

  /// Parses and checks `card_json` (a card.json file). Errors name the file and the field.
  static ModelCard load(const std::filesystem::path& card_json);

  const TensorSpec& input(const std::string& name) const;
  const TensorSpec& output(const std::string& name) const;
  bool isNoise(const std::string& input_name) const;
};

}  // namespace hepzoo
