// hepzoo::Session over the ONNX Runtime C++ API. See include/hepzoo/session.hpp for the behaviour.
#include "hepzoo/session.hpp"

#include <onnxruntime_cxx_api.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>
#include <utility>

#include "release_check.hpp"

namespace hepzoo {
namespace {

namespace fs = std::filesystem;

/// The one ONNX Runtime environment of the process (a function-local static: created on first use, thread-safe).
Ort::Env& processEnv() {
  static Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "hepzoo");
  return env;
}

using detail::join;
using detail::OutputSlot;

/// "NaN", "+inf" or "-inf" for a non-finite value.
std::string describeNonFinite(float v) { return std::isnan(v) ? "NaN" : (v > 0 ? "+inf" : "-inf"); }

/// One MLPF event as the core sees it: rows of features, and where each output's rows go.
struct EventJob {
  const float* rows = nullptr;
  std::int64_t n = 0;
  std::vector<float*> dest;  // per output slot, n * width floats
};

}  // namespace

std::int64_t numElements(const Shape& shape) {
  std::int64_t n = 1;
  for (std::int64_t d : shape) n *= d;
  return n;
}

std::string toString(const Shape& shape) {
  std::string out;
  for (std::int64_t d : shape) out += (out.empty() ? "" : ", ") + std::to_string(d);
  return "[" + out + "]";
}

bool cudaCompiledIn() {
#ifdef HEPZOO_WITH_CUDA
  return true;
#else
  return false;
#endif
}

struct Session::Impl {
  fs::path folder;
  ModelCard card;
  SessionOptions options;
  std::vector<std::int64_t> buckets;
  // Ort::Session::Run is not const in the C++ API but is thread-safe (ONNX Runtime documents concurrent Run calls
  // on one session); nothing else mutates it after construction.
  mutable Ort::Session session{nullptr};
  std::vector<std::string> input_names;  // graph order
  std::vector<std::string> output_names;
  std::vector<const char*> input_cstr;
  std::vector<const char*> output_cstr;
  std::vector<OutputSlot> outputs;  // graph order
  // MLPF
  std::string features_name;
  std::string mask_name;  // empty: the graph takes no mask
  std::int64_t n_features = 0;

  std::string who() const { return "hepzoo::Session(" + card.name + ")"; }
  [[noreturn]] void fail(const std::string& what) const { throw Error(who() + ": " + what); }

  void requireFamily(const std::string& family, const std::string& method) const {
    if (card.family != family) {
      fail(method + " is for " + family + " models; " + card.name + " is a " + card.family + " model");
    }
  }

  std::int64_t padSize(std::int64_t n) const {
    for (std::int64_t b : buckets)
      if (n <= b) return b;
    const std::int64_t g = card.element_granularity;
    return std::max(g, (n + g - 1) / g * g);  // oversize: runs alone, never truncated
  }

  std::vector<Ort::Value> runGraph(const std::vector<Ort::Value>& inputs) const {
    try {
      return session.Run(Ort::RunOptions{nullptr}, input_cstr.data(), inputs.data(), inputs.size(),
                         output_cstr.data(), output_cstr.size());
    } catch (const Ort::Exception& e) {
      fail(std::string("ONNX Runtime run failed: ") + e.what());
    }
  }

  const float* outputData(const Ort::Value& value, std::size_t slot, const Shape& expected) const {
    const Shape got = value.GetTensorTypeAndShapeInfo().GetShape();
    if (got != expected) {
      fail("graph output '" + outputs[slot].name + "' has shape " + toString(got) + ", expected " + toString(expected));
    }
    return value.GetTensorData<float>();
  }

  // ---- construction ----------------------------------------------------------------------------------------

  void setUp(const fs::path& release, SessionOptions opts);

  // ---- MLPF ------------------------------------------------------------------------------------------------

  /// Checks one event's features: shape [n, F], data present, all finite. `what`: "event 3".
  void checkEvent(const ConstTensor& t, const std::string& what) const {
    if (t.shape.size() != 2 || t.shape[0] < 0 || t.shape[1] < 0) {
      fail("input '" + features_name + "' of " + what + ": expected shape [n_elements, " + std::to_string(n_features) +
           "], got " + toString(t.shape));
    }
    if (t.shape[1] != n_features) {
      fail("input '" + features_name + "' of " + what + ": expected " + std::to_string(n_features) +
           " features per element (the card's feature order: " + join(card.input(features_name).feature_names) +
           "), got " + std::to_string(t.shape[1]));
    }
    checkRows(t.data, t.shape[0], what, "element");
  }

  /// `n` rows of F features at `rows`: present and finite.
  void checkRows(const float* rows, std::int64_t n, const std::string& what, const char* row_word) const {
    if (n > 0 && rows == nullptr) fail("input '" + features_name + "' of " + what + ": null data for " + std::to_string(n) + " rows");
    const TensorSpec& spec = card.input(features_name);
    for (std::int64_t i = 0; i < n * n_features; ++i) {
      if (!std::isfinite(rows[i])) {
        fail("input '" + features_name + "' of " + what + ", " + row_word + " " + std::to_string(i / n_features) +
             ", feature '" + spec.featureName(i % n_features) + "': " + describeNonFinite(rows[i]) +
             " (inputs must be finite)");
      }
    }
  }

  /// Offsets (contract 2) over `n_rows` rows: non-empty, non-decreasing, within [0, n_rows].
  void checkOffsets(const std::vector<std::int64_t>& offsets, std::int64_t n_rows) const {
    if (offsets.empty()) fail("offsets must hold at least one value (B events need B+1 offsets)");
    if (offsets.front() < 0 || offsets.back() > n_rows) {
      fail("offsets must lie within [0, " + std::to_string(n_rows) + "] (the rows of '" + features_name + "'), got " +
           std::to_string(offsets.front()) + " .. " + std::to_string(offsets.back()));
    }
    for (std::size_t i = 1; i < offsets.size(); ++i) {
      if (offsets[i] < offsets[i - 1]) {
        fail("offsets must be non-decreasing: offsets[" + std::to_string(i) + "] = " + std::to_string(offsets[i]) +
             " < offsets[" + std::to_string(i - 1) + "] = " + std::to_string(offsets[i - 1]));
      }
    }
  }

  /// Each output buffer present, of shape [rows, tail...], with data; no unknown names. `what`: "event 0".
  std::vector<float*> checkBuffers(const OutputBuffers& buffers, std::int64_t rows, const std::string& what) const {
    for (const auto& [name, buffer] : buffers) {
      if (std::none_of(outputs.begin(), outputs.end(), [&](const OutputSlot& s) { return s.name == name; })) {
        fail("runInto: buffer '" + name + "' is not an output of " + card.name + " (outputs: " + join(output_names) + ")");
      }
    }
    std::vector<float*> dest;
    for (const OutputSlot& slot : outputs) {
      Shape expected{rows};
      expected.insert(expected.end(), slot.tail.begin(), slot.tail.end());
      auto it = buffers.find(slot.name);
      if (it == buffers.end()) fail("runInto: no buffer for output '" + slot.name + "' (" + what + ": shape " + toString(expected) + ")");
      if (it->second.shape != expected) {
        fail("runInto: buffer '" + slot.name + "' has shape " + toString(it->second.shape) + ", " + what + " needs " +
             toString(expected));
      }
      if (rows > 0 && it->second.data == nullptr) fail("runInto: buffer '" + slot.name + "' has null data");
      dest.push_back(it->second.data);
    }
    return dest;
  }

  Outputs allocate(std::int64_t rows) const {
    Outputs out;
    for (const OutputSlot& slot : outputs) {
      Tensor& t = out[slot.name];
      t.shape = {rows};
      t.shape.insert(t.shape.end(), slot.tail.begin(), slot.tail.end());
      t.data.assign(static_cast<std::size_t>(rows * slot.width), 0.0f);
    }
    return out;
  }

  /// The core: groups events by pad size, pads, runs `batch_size` events per call (oversize ones alone), unpads.
  /// Empty events need no work (their outputs have no rows).
  void runEvents(const std::vector<EventJob>& events) const {
    std::map<std::int64_t, std::vector<std::size_t>> groups;  // pad size -> event indices, in order
    for (std::size_t e = 0; e < events.size(); ++e)
      if (events[e].n > 0) groups[padSize(events[e].n)].push_back(e);
    const std::int64_t largest = buckets.empty() ? 0 : buckets.back();
    for (const auto& [size, members] : groups) {
      const std::size_t step = size <= largest ? options.batch_size : 1;
      for (std::size_t start = 0; start < members.size(); start += step) {
        const std::size_t stop = std::min(members.size(), start + step);
        runPadded(size, std::vector<std::size_t>(members.begin() + static_cast<std::ptrdiff_t>(start),
                                                 members.begin() + static_cast<std::ptrdiff_t>(stop)),
                  events);
      }
    }
  }

  void runPadded(std::int64_t size, const std::vector<std::size_t>& members, const std::vector<EventJob>& events) const {
    const auto b = static_cast<std::int64_t>(members.size());
    std::vector<float> x(static_cast<std::size_t>(b * size * n_features), 0.0f);
    std::vector<std::uint8_t> mask(static_cast<std::size_t>(b * size), 0);  // ONNX bool: one byte, 0 or 1
    for (std::int64_t j = 0; j < b; ++j) {
      const EventJob& ev = events[members[static_cast<std::size_t>(j)]];
      std::copy_n(ev.rows, ev.n * n_features, x.begin() + j * size * n_features);
      std::fill_n(mask.begin() + j * size, ev.n, std::uint8_t{1});
    }
    const Ort::MemoryInfo memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    const std::int64_t x_shape[] = {b, size, n_features};
    const std::int64_t mask_shape[] = {b, size};
    std::vector<Ort::Value> inputs;
    for (const std::string& name : input_names) {
      if (name == features_name) {
        inputs.push_back(Ort::Value::CreateTensor<float>(memory, x.data(), x.size(), x_shape, 3));
      } else {
        inputs.push_back(Ort::Value::CreateTensor(memory, mask.data(), mask.size(), mask_shape, 2,
                                                  ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL));
      }
    }
    const std::vector<Ort::Value> result = runGraph(inputs);
    for (std::size_t k = 0; k < outputs.size(); ++k) {
      Shape expected{b, size};
      expected.insert(expected.end(), outputs[k].tail.begin(), outputs[k].tail.end());
      const float* data = outputData(result[k], k, expected);
      const std::int64_t w = outputs[k].width;
      for (std::int64_t j = 0; j < b; ++j) {
        const EventJob& ev = events[members[static_cast<std::size_t>(j)]];
        std::copy_n(data + j * size * w, ev.n * w, ev.dest[k]);
      }
    }
  }

  /// Flat rows + offsets -> jobs whose outputs land in `dest` (flat, row i = input row offsets[0] + i).
  std::vector<EventJob> flatJobs(const ConstTensor& features, const std::vector<std::int64_t>& offsets,
                                 const std::vector<float*>& dest) const {
    std::vector<EventJob> jobs(offsets.size() - 1);
    for (std::size_t e = 0; e + 1 < offsets.size(); ++e) {
      EventJob& job = jobs[e];
      job.n = offsets[e + 1] - offsets[e];
      job.rows = features.data + offsets[e] * n_features;
      for (std::size_t k = 0; k < outputs.size(); ++k) job.dest.push_back(dest[k] + (offsets[e] - offsets[0]) * outputs[k].width);
    }
    return jobs;
  }

  void checkFlat(const ConstTensor& features, const std::vector<std::int64_t>& offsets) const {
    if (features.shape.size() != 2 || features.shape[1] != n_features || features.shape[0] < 0) {
      fail("input '" + features_name + "': expected flat element rows of shape [N, " + std::to_string(n_features) +
           "] (the card's feature order: " + join(card.input(features_name).feature_names) + "), got " +
           toString(features.shape));
    }
    checkOffsets(offsets, features.shape[0]);
    if (features.shape[0] > 0 && features.data == nullptr) fail("input '" + features_name + "': null data");
    for (std::size_t e = 0; e + 1 < offsets.size(); ++e) {
      checkRows(features.data + offsets[e] * n_features, offsets[e + 1] - offsets[e], "event " + std::to_string(e), "element");
    }
  }

  // ---- flash-sim -------------------------------------------------------------------------------------------

  /// Every graph input present with shape [N, tail...], one N for all, finite values; returns N.
  std::int64_t checkRowInputs(const Inputs& inputs) const {
    for (const auto& [name, tensor] : inputs) {
      if (std::find(input_names.begin(), input_names.end(), name) == input_names.end()) {
        fail("input '" + name + "' is not an input of " + card.name + " (inputs: " + join(input_names) + ")");
      }
    }
    std::int64_t rows = -1;
    std::string first;
    for (const std::string& name : input_names) {
      const TensorSpec& spec = card.input(name);
      Shape expected_tail = spec.tail();
      auto it = inputs.find(name);
      const std::string kind = card.isNoise(name) ? " (standard-normal noise)" : "";
      if (it == inputs.end()) fail("missing input '" + name + "'" + kind + " (inputs: " + join(input_names) + ")");
      const ConstTensor& t = it->second;
      const Shape tail(t.shape.begin() + (t.shape.empty() ? 0 : 1), t.shape.end());
      if (t.shape.empty() || t.shape[0] < 0 || tail != expected_tail) {
        std::string expected = "[N";
        for (std::int64_t d : expected_tail) expected += ", " + std::to_string(d);
        const std::string features = spec.feature_names.empty() ? "" : " (features " + join(spec.feature_names) + ")";
        fail("input '" + name + "'" + kind + ": expected shape " + expected + "]" + features + ", got " + toString(t.shape));
      }
      if (rows >= 0 && t.shape[0] != rows) {
        fail("input '" + name + "' has " + std::to_string(t.shape[0]) + " rows but input '" + first + "' has " + std::to_string(rows));
      }
      rows = t.shape[0];
      first = name;
      const std::int64_t width = numElements(expected_tail);
      if (rows > 0 && t.data == nullptr) fail("input '" + name + "': null data");
      for (std::int64_t i = 0; i < rows * width; ++i) {
        if (!std::isfinite(t.data[i])) {
          fail("input '" + name + "', row " + std::to_string(i / width) + ", feature '" + spec.featureName(i % width) +
               "': " + describeNonFinite(t.data[i]) + " (inputs must be finite)");
        }
      }
    }
    return rows;
  }

  void runRows(const Inputs& inputs, std::int64_t rows, const std::vector<float*>& dest) const {
    const Ort::MemoryInfo memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    const auto chunk = static_cast<std::int64_t>(options.sample_chunk);
    for (std::int64_t start = 0; start < rows; start += chunk) {
      const std::int64_t n = std::min(chunk, rows - start);
      std::vector<Ort::Value> values;
      for (const std::string& name : input_names) {
        const ConstTensor& t = inputs.at(name);
        Shape shape = t.shape;
        shape[0] = n;
        const std::int64_t width = numElements(shape) / std::max<std::int64_t>(n, 1);
        // ONNX Runtime takes a non-const pointer but only reads an input tensor.
        float* data = const_cast<float*>(t.data) + start * width;
        values.push_back(Ort::Value::CreateTensor<float>(memory, data, static_cast<std::size_t>(n * width), shape.data(), shape.size()));
      }
      const std::vector<Ort::Value> result = runGraph(values);
      for (std::size_t k = 0; k < outputs.size(); ++k) {
        Shape expected{n};
        expected.insert(expected.end(), outputs[k].tail.begin(), outputs[k].tail.end());
        const float* data = outputData(result[k], k, expected);
        std::copy_n(data, n * outputs[k].width, dest[k] + start * outputs[k].width);
      }
    }
  }
};

// ---- construction ----------------------------------------------------------------------------------------------

void Session::Impl::setUp(const fs::path& release, SessionOptions opts) {
  options = std::move(opts);
  detail::VerifiedModel verified = detail::loadVerifiedModel(release);  // card, path inside the folder, sha256
  folder = verified.folder;
  card = std::move(verified.card);
  const std::vector<char>& model = verified.bytes;
  const fs::path& onnx_path = verified.onnx_path;

  if (options.intra_op_threads < 1) fail("intra_op_threads must be >= 1, got " + std::to_string(options.intra_op_threads));
  if (options.batch_size < 1) fail("batch_size must be >= 1");
  if (options.sample_chunk < 1) fail("sample_chunk must be >= 1");
  buckets = options.size_buckets.empty() ? card.size_buckets : options.size_buckets;
  for (std::size_t i = 0; i < buckets.size(); ++i) {
    if (buckets[i] <= 0 || (i > 0 && buckets[i] <= buckets[i - 1])) {
      fail("size buckets must be positive and strictly increasing, got " + toString(buckets));
    }
    if (buckets[i] % card.element_granularity != 0) {
      fail("size bucket " + std::to_string(buckets[i]) + " is not a multiple of the element granularity " +
           std::to_string(card.element_granularity));
    }
  }

  Ort::Env& env = processEnv();  // first: execution providers log through the environment's logger
  Ort::SessionOptions so;
  so.SetIntraOpNumThreads(options.intra_op_threads);
  so.SetInterOpNumThreads(1);
  so.SetExecutionMode(ExecutionMode::ORT_SEQUENTIAL);
  if (options.backend == Backend::CUDA) {
#ifdef HEPZOO_WITH_CUDA
    OrtCUDAProviderOptions cuda{};
    cuda.device_id = options.cuda_device;
    try {
      so.AppendExecutionProvider_CUDA(cuda);
    } catch (const Ort::Exception& e) {
      fail(std::string("cannot use the CUDA execution provider (is libonnxruntime built with CUDA?): ") + e.what());
    }
#else
    fail("Backend::CUDA requested, but libhepzoo was built without CUDA (configure with -DHEPZOO_WITH_CUDA=ON "
         "against a CUDA-enabled ONNX Runtime)");
#endif
  }
  try {
    session = Ort::Session(env, model.data(), model.size(), so);
  } catch (const Ort::Exception& e) {
    throw Error(onnx_path.string() + ": ONNX Runtime cannot load the model: " + e.what());
  }
  detail::GraphInterface graph = detail::checkInterface(session, card, folder);
  input_names = std::move(graph.input_names);
  output_names = std::move(graph.output_names);
  outputs = std::move(graph.outputs);
  features_name = std::move(graph.features_name);
  mask_name = std::move(graph.mask_name);
  n_features = graph.n_features;
  for (const std::string& n : input_names) input_cstr.push_back(n.c_str());
  for (const std::string& n : output_names) output_cstr.push_back(n.c_str());
}

Session::Session(const fs::path& release_dir, SessionOptions options) {
  auto impl = std::make_unique<Impl>();
  try {
    impl->setUp(release_dir, std::move(options));
  } catch (const fs::filesystem_error& e) {  // a folder that cannot be read or resolved: a hepzoo::Error too
    throw Error(e.path1().string() + ": " + e.code().message() + " (loading the release " + release_dir.string() + ")");
  }
  impl_ = std::move(impl);
}

Session::~Session() = default;
Session::Session(Session&&) noexcept = default;
Session& Session::operator=(Session&&) noexcept = default;

const ModelCard& Session::card() const { return impl_->card; }
const fs::path& Session::folder() const { return impl_->folder; }
const SessionOptions& Session::options() const { return impl_->options; }
const std::vector<std::int64_t>& Session::buckets() const { return impl_->buckets; }
std::int64_t Session::padSize(std::int64_t n_elements) const { return impl_->padSize(n_elements); }

// ---- MLPF -----------------------------------------------------------------------------------------------------

Outputs Session::run(const ConstTensor& event) const {
  impl_->requireFamily("mlpf", "run(event)");
  impl_->checkEvent(event, "event 0");
  Outputs out = impl_->allocate(event.shape[0]);
  std::vector<EventJob> jobs(1);
  jobs[0].rows = event.data;
  jobs[0].n = event.shape[0];
  for (const OutputSlot& slot : impl_->outputs) jobs[0].dest.push_back(out[slot.name].data.data());
  impl_->runEvents(jobs);
  return out;
}

void Session::runInto(const ConstTensor& event, const OutputBuffers& outputs) const {
  impl_->requireFamily("mlpf", "runInto(event)");
  impl_->checkEvent(event, "event 0");
  std::vector<EventJob> jobs(1);
  jobs[0].rows = event.data;
  jobs[0].n = event.shape[0];
  jobs[0].dest = impl_->checkBuffers(outputs, event.shape[0], "event 0");
  impl_->runEvents(jobs);
}

std::vector<Outputs> Session::run(const std::vector<ConstTensor>& events) const {
  impl_->requireFamily("mlpf", "run(events)");
  for (std::size_t e = 0; e < events.size(); ++e) impl_->checkEvent(events[e], "event " + std::to_string(e));
  std::vector<Outputs> out;
  std::vector<EventJob> jobs(events.size());
  out.reserve(events.size());
  for (std::size_t e = 0; e < events.size(); ++e) {
    out.push_back(impl_->allocate(events[e].shape[0]));
    jobs[e].rows = events[e].data;
    jobs[e].n = events[e].shape[0];
    for (const OutputSlot& slot : impl_->outputs) jobs[e].dest.push_back(out.back()[slot.name].data.data());
  }
  impl_->runEvents(jobs);
  return out;
}

Outputs Session::runElements(const ConstTensor& features, const std::vector<std::int64_t>& offsets) const {
  impl_->requireFamily("mlpf", "runElements");
  impl_->checkFlat(features, offsets);
  Outputs out = impl_->allocate(offsets.back() - offsets.front());
  std::vector<float*> dest;
  for (const OutputSlot& slot : impl_->outputs) dest.push_back(out[slot.name].data.data());
  impl_->runEvents(impl_->flatJobs(features, offsets, dest));
  return out;
}

void Session::runElementsInto(const ConstTensor& features, const std::vector<std::int64_t>& offsets,
                              const OutputBuffers& outputs) const {
  impl_->requireFamily("mlpf", "runElementsInto");
  impl_->checkFlat(features, offsets);
  const std::int64_t rows = offsets.back() - offsets.front();
  const std::vector<float*> dest = impl_->checkBuffers(outputs, rows, std::to_string(offsets.size() - 1) + " events");
  impl_->runEvents(impl_->flatJobs(features, offsets, dest));
}

// ---- flash-sim ------------------------------------------------------------------------------------------------

Outputs Session::run(const Inputs& inputs) const {
  impl_->requireFamily("flashsim", "run(inputs)");
  const std::int64_t rows = impl_->checkRowInputs(inputs);
  Outputs out = impl_->allocate(rows);
  std::vector<float*> dest;
  for (const OutputSlot& slot : impl_->outputs) dest.push_back(out[slot.name].data.data());
  impl_->runRows(inputs, rows, dest);
  return out;
}

void Session::runInto(const Inputs& inputs, const OutputBuffers& outputs) const {
  impl_->requireFamily("flashsim", "runInto(inputs)");
  const std::int64_t rows = impl_->checkRowInputs(inputs);
  impl_->runRows(inputs, rows, impl_->checkBuffers(outputs, rows, std::to_string(rows) + " rows"));
}

Outputs Session::sample(const ConstTensor& context, std::uint64_t seed) const {
  impl_->requireFamily("flashsim", "sample");
  if (context.shape.empty() || context.shape[0] < 0) {
    impl_->fail("sample: context must have shape [N, ...], got " + toString(context.shape));
  }
  const std::int64_t rows = context.shape[0];
  std::mt19937_64 generator(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::map<std::string, Tensor> noise;
  Inputs inputs;
  for (const TensorSpec& spec : impl_->card.inputs) {
    if (!impl_->card.isNoise(spec.name)) {
      inputs[spec.name] = context;
      continue;
    }
    Tensor& t = noise[spec.name];  // card order, all rows of one noise input, then the next
    t.shape = {rows};
    const Shape tail = spec.tail();
    t.shape.insert(t.shape.end(), tail.begin(), tail.end());
    t.data.resize(static_cast<std::size_t>(numElements(t.shape)));
    for (float& v : t.data) v = normal(generator);
    inputs[spec.name] = std::as_const(t).view();
  }
  if (inputs.size() != impl_->card.inputs.size()) impl_->fail("sample needs exactly one non-noise (context) input");
  Outputs out = run(inputs);
  for (auto& [name, tensor] : noise) out[name] = std::move(tensor);
  return out;
}

}  // namespace hepzoo
