// hepzoo::Session: one released model (zoo/<name>/<version>/: card.json + model.onnx) on ONNX Runtime.
//
// Loading parses card.json, refuses an onnx.file that points outside the release folder, checks the sha256 of
// model.onnx against the card, and checks that the graph's inputs and outputs are the card's.
//
// Threading (DESIGN.md contract 4): one process-wide Ort::Env; `intra_op_threads` defaults to 1 because the
// framework owns threading. A Session is immutable after construction and every method is const: share one
// Session between any number of threads (Ort::Session::Run is thread-safe; each call uses its own buffers).
//
// MLPF models (family "mlpf"): each event is a [n_elements, n_features] float32 block of raw element features
// (the card's feature order; the input transform is inside the graph). Events are grouped by the card's size
// buckets (or SessionOptions::size_buckets), padded with zeros and a false mask, run `batch_size` events per
// ONNX Runtime call, and unpadded: each event gets outputs [n_elements, ...]. An event larger than the largest
// bucket runs alone, padded to the next multiple of element_granularity (never truncated). An empty event
// (zero elements) is not an error: its outputs have zero rows, as in the Python runtime. This is the grouping of
// hepzoo.runtime.Session.run_elements, so results match it within the card's tolerance.
//
// Flash-sim models (family "flashsim"): rows are objects; run() takes the context and every noise input
// (card.noise_inputs, standard normal) by name. sample(context, seed) fills the noise itself from
// std::mt19937_64(seed) and std::normal_distribution<float>: reproducible for a seed with the same C++ standard
// library, but not the same numbers as Python's Session.sample(seed) (NumPy's PCG64). Pass the noise explicitly
// to reproduce a Python result.
//
// Errors: hepzoo::Error, naming the input tensor, event/row, element and feature at fault: wrong feature count,
// NaN or infinity in an input, a missing or mis-shaped buffer, a tampered model file.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "hepzoo/card.hpp"
#include "hepzoo/error.hpp"
#include "hepzoo/tensor.hpp"

namespace hepzoo {

enum class Backend {
  CPU,   ///< ONNX Runtime CPU execution provider
  CUDA,  ///< CUDA execution provider, appended only in builds configured with -DHEPZOO_WITH_CUDA=ON
};

/// Whether this build of libhepzoo can use Backend::CUDA (it still needs a CUDA-enabled libonnxruntime).
bool cudaCompiledIn();

struct SessionOptions {
  Backend backend = Backend::CPU;
  int intra_op_threads = 1;           ///< ONNX Runtime threads inside one call; the framework owns the rest
  int cuda_device = 0;                ///< Backend::CUDA only
  std::size_t batch_size = 32;        ///< MLPF: events per ONNX Runtime call within one size bucket
  std::size_t sample_chunk = 65536;   ///< flash-sim: rows per ONNX Runtime call
  std::vector<std::int64_t> size_buckets;  ///< MLPF: overrides the card's buckets (multiples of the granularity)
};

class Session {
 public:
  /// `release_dir`: a release folder holding card.json (or the card.json path itself).
  explicit Session(const std::filesystem::path& release_dir, SessionOptions options = {});
  ~Session();
  Session(Session&&) noexcept;
  Session& operator=(Session&&) noexcept;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  const ModelCard& card() const;
  const std::filesystem::path& folder() const;
  const SessionOptions& options() const;
  /// The size buckets in use (the card's unless overridden).
  const std::vector<std::int64_t>& buckets() const;
  /// MLPF: the padded size of an event of `n_elements` (smallest bucket >= n, else the next granularity multiple).
  std::int64_t padSize(std::int64_t n_elements) const;

  // ---- MLPF: per-event outputs, unpadded ------------------------------------------------------------------
  /// One event [n, F] -> {output: [n, ...]}.
  Outputs run(const ConstTensor& event) const;
  /// Several events (batched by size bucket) -> one Outputs per event, same order.
  std::vector<Outputs> run(const std::vector<ConstTensor>& events) const;
  /// Ragged layout (contract 2): flat rows [N, F] + offsets [B+1] -> flat outputs [offsets[B]-offsets[0], ...];
  /// output row i belongs to input row offsets[0] + i.
  Outputs runElements(const ConstTensor& features, const std::vector<std::int64_t>& offsets) const;
  /// One event into caller-owned buffers, one per graph output, each of shape [n, ...].
  void runInto(const ConstTensor& event, const OutputBuffers& outputs) const;
  /// Ragged layout into caller-owned flat buffers [offsets[B]-offsets[0], ...].
  void runElementsInto(const ConstTensor& features, const std::vector<std::int64_t>& offsets,
                       const OutputBuffers& outputs) const;

  // ---- flash-sim: rows are objects ------------------------------------------------------------------------
  /// Context and noise inputs by name, each [N, ...] -> {output: [N, ...]}.
  Outputs run(const Inputs& inputs) const;
  /// The same into caller-owned buffers [N, ...].
  void runInto(const Inputs& inputs, const OutputBuffers& outputs) const;
  /// Context [N, C]; noise drawn from std::mt19937_64(seed) (see the file comment). Also returns the noise
  /// it drew, under the noise inputs' names, so a result can be reproduced with run().
  Outputs sample(const ConstTensor& context, std::uint64_t seed) const;

 private:
  struct Impl;
  std::unique_ptr<const Impl> impl_;
};

}  // namespace hepzoo
