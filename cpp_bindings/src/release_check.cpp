// Loading a release (card, path inside the folder, sha256 of the model bytes) and the card/graph consistency
// checks, for hepzoo::Session (session.cpp). See release_check.hpp.
#include "release_check.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>

#include "hepzoo/error.hpp"
#include "hepzoo/sha256.hpp"

namespace hepzoo {
namespace detail {
namespace {

namespace fs = std::filesystem;
constexpr const char* kCard = "card.json";

std::vector<char> readFile(const fs::path& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw Error(path.string() + ": cannot open the model file: " + std::strerror(errno));
  std::vector<char> bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  if (file.bad()) throw Error(path.string() + ": read error");
  return bytes;
}

/// `path` (made absolute, symlinks resolved) lies inside `folder` (already canonical).
bool isInside(const fs::path& folder, const fs::path& path) {
  const fs::path relative = fs::weakly_canonical(path).lexically_relative(folder);
  return !relative.empty() && *relative.begin() != ".." && relative.is_relative();
}

ONNXTensorElementDataType elementType(const std::string& dtype) {
  if (dtype == "float32") return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  if (dtype == "bool") return ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL;
  return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
}

/// The card's name of an ONNX element type ("float32", "bool"), else "ONNX element type N".
std::string typeName(ONNXTensorElementDataType type) {
  if (type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) return "float32";
  if (type == ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL) return "bool";
  return "ONNX element type " + std::to_string(static_cast<int>(type));
}

/// A card shape with its axis names: "[batch, elements, 20]".
std::string describe(const TensorSpec& spec) {
  std::string out;
  for (std::size_t i = 0; i < spec.shape.size(); ++i) {
    out += (i ? ", " : "") + (spec.shape[i] < 0 ? spec.axis_names[i] : std::to_string(spec.shape[i]));
  }
  return "[" + out + "]";
}

/// A graph shape: symbolic axes (-1 from ONNX Runtime) as "?".
std::string describe(const Shape& graph) {
  std::string out;
  for (std::size_t i = 0; i < graph.size(); ++i) out += (i ? ", " : "") + (graph[i] < 0 ? "?" : std::to_string(graph[i]));
  return "[" + out + "]";
}

/// The graph's shape agrees with the card's: same rank, and every axis fixed in both has the same size.
bool sameShape(const TensorSpec& spec, const Shape& graph) {
  if (graph.size() != spec.shape.size()) return false;
  for (std::size_t i = 0; i < graph.size(); ++i) {
    if (graph[i] >= 0 && spec.shape[i] >= 0 && graph[i] != spec.shape[i]) return false;
  }
  return true;
}

}  // namespace

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& s : items) out += (out.empty() ? "" : ", ") + s;
  return "[" + out + "]";
}

VerifiedModel loadVerifiedModel(const fs::path& release) {
  VerifiedModel m;
  fs::path dir = release;
  if (fs::is_regular_file(dir) && dir.filename() == kCard) dir = dir.parent_path();
  if (!fs::is_directory(dir)) throw Error(release.string() + ": not a release folder (expected a folder holding " + kCard + ")");
  m.folder = fs::canonical(dir);
  const fs::path card_path = m.folder / kCard;
  if (!fs::is_regular_file(card_path)) throw Error(m.folder.string() + ": no " + kCard + " (export the release first: hepzoo export)");
  m.card = ModelCard::load(card_path);

  m.onnx_path = m.folder / m.card.onnx_file;
  if (!isInside(m.folder, m.onnx_path)) {
    throw Error(card_path.string() + ": onnx.file '" + m.card.onnx_file + "' points outside the release folder " + m.folder.string());
  }
  m.bytes = readFile(m.onnx_path);
  // Hash the very bytes that the session loads, so the file cannot change between the check and the load.
  const std::string actual = sha256Hex(m.bytes.data(), m.bytes.size());
  if (actual != m.card.onnx_sha256) {
    throw Error(card_path.string() + ": sha256 mismatch: the card records " + m.card.onnx_sha256 + " but " +
                m.onnx_path.string() + " has " + actual + " (the model file was modified or corrupted)");
  }
  return m;
}

GraphInterface checkInterface(const Ort::Session& session, const ModelCard& card, const fs::path& folder) {
  GraphInterface g;
  std::vector<std::string>& input_names = g.input_names;
  std::vector<std::string>& output_names = g.output_names;
  std::vector<OutputSlot>& outputs = g.outputs;
  std::string& features_name = g.features_name;
  std::string& mask_name = g.mask_name;
  std::int64_t& n_features = g.n_features;
  // The graph's interface is the card's: every graph input and output is in the card, with its element type and
  // the sizes of its fixed axes. Errors name the model file, the tensor, and the card.
  Ort::AllocatorWithDefaultOptions allocator;
  const std::string onnx = (folder / card.onnx_file).string();
  const std::string the_card = "the card " + card.path.string();
  auto names = [](const std::vector<TensorSpec>& specs) {
    std::vector<std::string> out;
    for (const TensorSpec& t : specs) out.push_back(t.name);
    return join(out);
  };
  auto check = [&](const char* kind, const std::string& name, const std::vector<TensorSpec>& specs,
                   const Ort::ConstTensorTypeAndShapeInfo& info) -> const TensorSpec& {
    const auto spec = std::find_if(specs.begin(), specs.end(), [&](const TensorSpec& t) { return t.name == name; });
    if (spec == specs.end()) {
      throw Error(onnx + ": graph " + kind + " '" + name + "' is not in " + the_card + " (its " + kind + "s: " + names(specs) + ")");
    }
    const ONNXTensorElementDataType type = info.GetElementType();
    if (elementType(spec->dtype) != type) {
      throw Error(onnx + ": graph " + kind + " '" + name + "' is " + typeName(type) + ", " + the_card + " says " + spec->dtype);
    }
    const Shape graph = info.GetShape();
    if (!sameShape(*spec, graph)) {
      throw Error(onnx + ": graph " + kind + " '" + name + "' has shape " + describe(graph) + ", " + the_card + " says " +
                  describe(*spec));
    }
    return *spec;
  };
  for (std::size_t i = 0; i < session.GetInputCount(); ++i) {
    input_names.emplace_back(session.GetInputNameAllocated(i, allocator).get());
    check("input", input_names.back(), card.inputs, session.GetInputTypeInfo(i).GetTensorTypeAndShapeInfo());
  }
  for (std::size_t i = 0; i < session.GetOutputCount(); ++i) {
    output_names.emplace_back(session.GetOutputNameAllocated(i, allocator).get());
    const TensorSpec& spec = check("output", output_names.back(), card.outputs,
                                   session.GetOutputTypeInfo(i).GetTensorTypeAndShapeInfo());
    if (spec.dtype != "float32") throw Error(card.path.string() + ": output '" + spec.name + "' must be float32, got " + spec.dtype);
    const std::size_t prefix = card.family == "mlpf" ? 2 : 1;
    if (spec.symbolicPrefix() != prefix) {
      throw Error(card.path.string() + ": output '" + spec.name + "' must start with " + std::to_string(prefix) +
                  " symbolic axes for a " + card.family + " model, got " + describe(spec));
    }
    OutputSlot slot{spec.name, spec.tail(), numElements(spec.tail())};
    outputs.push_back(slot);
  }
  if (input_names.size() != card.inputs.size() || output_names.size() != card.outputs.size()) {
    throw Error(onnx + ": the graph has inputs " + join(input_names) + " and outputs " + join(output_names) +
                ", which are not the card's");
  }
  if (card.family == "mlpf") {
    for (const TensorSpec& t : card.inputs) {
      if (t.dtype == "bool" && t.shape.size() == 2 && t.symbolicPrefix() == 2) {
        mask_name = t.name;
      } else if (t.dtype == "float32" && t.shape.size() == 3 && t.symbolicPrefix() == 2 && features_name.empty()) {
        features_name = t.name;
        n_features = t.shape[2];
      } else {
        throw Error(card.path.string() + ": mlpf input '" + t.name + "' must be float32 [batch, elements, F] or a bool mask [batch, elements], got " +
                    t.dtype + " " + describe(t));
      }
    }
    if (features_name.empty()) throw Error(card.path.string() + ": an mlpf card needs a float32 [batch, elements, F] input");
  } else {
    for (const TensorSpec& t : card.inputs) {
      if (t.dtype != "float32" || t.symbolicPrefix() != 1) {
        throw Error(card.path.string() + ": flashsim input '" + t.name + "' must be float32 [batch, ...], got " + t.dtype +
                    " " + describe(t));
      }
    }
  }
  return g;
}

}  // namespace detail
}  // namespace hepzoo
