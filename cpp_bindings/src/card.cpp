// card.json -> hepzoo::ModelCard with nlohmann::json; errors name the file and the field.
#include "hepzoo/card.hpp"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>

#include "hepzoo/error.hpp"

namespace hepzoo {
namespace {

using nlohmann::json;

/// A JSON value for a message: compact, and cut after 60 characters (a card's lists can be long).
std::string brief(const json& v) {
  std::string text = v.dump();
  return text.size() <= 60 ? text : text.substr(0, 57) + "...";
}

/// nlohmann's message without its "[json.exception.parse_error.101] " tag.
std::string jsonMessage(const json::exception& e) {
  const std::string what = e.what();
  const std::size_t tag = what.find("] ");
  return what.rfind("[json.exception.", 0) == 0 && tag != std::string::npos ? what.substr(tag + 2) : what;
}

class CardReader {
 public:
  explicit CardReader(std::filesystem::path path) : path_(std::move(path)) {}

  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    throw Error(path_.string() + ": field '" + field + "': " + what);
  }

  const json& at(const json& object, const std::string& key, const std::string& where) const {
    if (!object.is_object()) fail(where, "expected an object");
    auto it = object.find(key);
    if (it == object.end()) fail(join(where, key), "missing");
    return *it;
  }

  std::string str(const json& object, const std::string& key, const std::string& where) const {
    const json& v = at(object, key, where);
    if (!v.is_string()) fail(join(where, key), "expected a string, got " + brief(v));
    return v.get<std::string>();
  }

  std::int64_t integer(const json& v, const std::string& field) const {
    if (!v.is_number_integer()) fail(field, "expected an integer, got " + brief(v));
    return v.get<std::int64_t>();
  }

  double number(const json& object, const std::string& key, const std::string& where) const {
    const json& v = at(object, key, where);
    if (!v.is_number() || v.get<double>() < 0) fail(join(where, key), "expected a non-negative number, got " + brief(v));
    return v.get<double>();
  }

  std::vector<std::string> strings(const json& v, const std::string& field) const {
    std::vector<std::string> out;
    if (v.is_null()) return out;
    if (!v.is_array()) fail(field, "expected a list of strings, got " + brief(v));
    for (const json& s : v) {
      if (!s.is_string()) fail(field, "expected a list of strings, got " + brief(v));
      out.push_back(s.get<std::string>());
    }
    return out;
  }

  void shape(const json& v, const std::string& field, Shape& shape, std::vector<std::string>& names) const {
    if (!v.is_array() || v.empty()) fail(field, "expected a non-empty list of axis sizes or names, got " + brief(v));
    for (const json& axis : v) {
      if (axis.is_string()) {
        shape.push_back(-1);
        names.push_back(axis.get<std::string>());
      } else if (axis.is_number_integer() && axis.get<std::int64_t>() > 0) {
        shape.push_back(axis.get<std::int64_t>());
        names.emplace_back();
      } else {
        fail(field, "axis " + brief(axis) + " is neither a name nor a positive size");
      }
    }
  }

  TensorSpec tensor(const json& v, const std::string& field) const {
    TensorSpec t;
    t.name = str(v, "name", field);
    t.dtype = str(v, "dtype", field);
    shape(at(v, "shape", field), field + ".shape", t.shape, t.axis_names);
    if (v.contains("feature_names")) t.feature_names = strings(v["feature_names"], field + ".feature_names");
    if (!t.feature_names.empty() && t.shape.back() != static_cast<std::int64_t>(t.feature_names.size())) {
      fail(field, "last axis " + std::to_string(t.shape.back()) + " does not match " +
                      std::to_string(t.feature_names.size()) + " feature names");
    }
    return t;
  }

  std::vector<TensorSpec> tensors(const json& object, const std::string& key) const {
    const json& v = at(object, key, "");
    if (!v.is_array() || v.empty()) fail(key, "expected a non-empty list");
    std::vector<TensorSpec> out;
    for (std::size_t i = 0; i < v.size(); ++i) out.push_back(tensor(v[i], key + "[" + std::to_string(i) + "]"));
    return out;
  }

 private:
  static std::string join(const std::string& where, const std::string& key) {
    return where.empty() ? key : where + "." + key;
  }
  std::filesystem::path path_;
};

}  // namespace

std::size_t TensorSpec::symbolicPrefix() const {
  std::size_t n = 0;
  while (n < shape.size() && shape[n] < 0) ++n;
  return n;
}

Shape TensorSpec::tail() const { return Shape(shape.begin() + static_cast<std::ptrdiff_t>(symbolicPrefix()), shape.end()); }

std::string TensorSpec::featureName(std::int64_t i) const {
  if (i >= 0 && i < static_cast<std::int64_t>(feature_names.size())) return feature_names[static_cast<std::size_t>(i)];
  return "#" + std::to_string(i);
}

ModelCard ModelCard::load(const std::filesystem::path& card_json) {
  std::ifstream file(card_json);
  if (!file) throw Error(card_json.string() + ": cannot open the model card: " + std::strerror(errno));
  json doc;
  try {
    doc = json::parse(file);
  } catch (const json::exception& e) {
    throw Error(card_json.string() + ": not valid JSON: " + jsonMessage(e));
  }
  CardReader r(card_json);
  ModelCard card;
  card.path = card_json;
  card.name = r.str(doc, "name", "");
  card.version = r.str(doc, "version", "");
  card.family = r.str(doc, "family", "");
  if (card.family != "mlpf" && card.family != "flashsim") r.fail("family", "unknown family '" + card.family + "'");
  card.inputs = r.tensors(doc, "inputs");
  card.outputs = r.tensors(doc, "outputs");
  if (doc.contains("noise_inputs")) {
    const json& noise = doc["noise_inputs"];
    if (!noise.is_array()) r.fail("noise_inputs", "expected a list");
    for (std::size_t i = 0; i < noise.size(); ++i) {
      const std::string field = "noise_inputs[" + std::to_string(i) + "]";
      card.noise_inputs.push_back(r.str(noise[i], "name", field));
      if (noise[i].contains("distribution") && noise[i]["distribution"] != "standard normal") {
        r.fail(field + ".distribution", "only 'standard normal' is supported, got " + brief(noise[i]["distribution"]));
      }
    }
  }
  if (doc.contains("element_granularity")) card.element_granularity = r.integer(doc["element_granularity"], "element_granularity");
  if (card.element_granularity < 1) r.fail("element_granularity", "must be >= 1");
  if (doc.contains("size_buckets")) {
    const json& buckets = doc["size_buckets"];
    if (!buckets.is_array()) r.fail("size_buckets", "expected a list of integers");
    for (const json& b : buckets) card.size_buckets.push_back(r.integer(b, "size_buckets"));
  }
  const json& onnx = r.at(doc, "onnx", "");
  card.onnx_file = r.str(onnx, "file", "onnx");
  card.onnx_sha256 = r.str(onnx, "sha256", "onnx");
  static const std::regex kHex64("^[0-9a-f]{64}$");
  if (!std::regex_match(card.onnx_sha256, kHex64)) r.fail("onnx.sha256", "expected 64 lowercase hex digits");
  const json& tolerance = r.at(doc, "tolerance", "");
  card.atol = r.number(tolerance, "atol", "tolerance");
  card.rtol = r.number(tolerance, "rtol", "tolerance");

  for (const std::string& noise : card.noise_inputs) {
    bool found = false;
    for (const TensorSpec& t : card.inputs) found = found || t.name == noise;
    if (!found) r.fail("noise_inputs", "'" + noise + "' is not a graph input");
  }
  return card;
}

const TensorSpec& ModelCard::input(const std::string& name) const {
  for (const TensorSpec& t : inputs)
    if (t.name == name) return t;
  throw Error(path.string() + ": no input named '" + name + "'");
}

const TensorSpec& ModelCard::output(const std::string& name) const {
  for (const TensorSpec& t : outputs)
    if (t.name == name) return t;
  throw Error(path.string() + ": no output named '" + name + "'");
}

bool ModelCard::isNoise(const std::string& input_name) const {
  for (const std::string& n : noise_inputs)
    if (n == input_name) return true;
  return false;
}

}  // namespace hepzoo
