// Test driver for libhepzoo, run by tests/test_cpp_bindings.py (and ctest for the self-contained checks).
//
//   hepzoo_tests sha256-vectors                       FIPS 180-2 / NIST test vectors
//   hepzoo_tests sha256 FILE...                       prints "<hex>  <file>" per file (compared with hashlib)
//   hepzoo_tests one-line                             hepzoo::Error flattens a multi-line message to one line
//   hepzoo_tests parity RELEASE CASE_DIR              C++ outputs vs the Python runtime's golden files
//   hepzoo_tests sample RELEASE CASE_DIR SEED          flash-sim sample(context, seed): reproducible, consistent
//   hepzoo_tests threads RELEASE CASE_DIR T CALLS     T threads x CALLS calls on one Session == serial, bitwise
//   hepzoo_tests bad-input KIND RELEASE               one bad-input scenario; prints "ERROR: <message>", exit 3
//
// Golden case folder (written by the pytest): case.json + raw little-endian float32 files in C order.
//   case.json: {"family": "mlpf"|"flashsim", "batch_size": int, "size_buckets": [int...] (may be empty: the card's),
//               "offsets": [int...] (mlpf), "inputs": {name: {"file", "shape"}}, "outputs": {name: {"file", "shape"}}}
#include <hepzoo/hepzoo.hpp>

#include <nlohmann/json.hpp>

#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <functional>
#include <fstream>
#include <iostream>
#include <limits>
#include <mutex>
#include <thread>
#include <typeinfo>

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void failTest(const std::string& what) { throw Failure(what); }

hepzoo::Tensor readTensor(const fs::path& dir, const json& spec) {
  hepzoo::Tensor t;
  t.shape = spec.at("shape").get<hepzoo::Shape>();
  const fs::path file = dir / spec.at("file").get<std::string>();
  t.data.resize(static_cast<std::size_t>(hepzoo::numElements(t.shape)));
  std::ifstream in(file, std::ios::binary);
  if (!in) failTest(file.string() + ": cannot open");
  in.read(reinterpret_cast<char*>(t.data.data()), static_cast<std::streamsize>(t.data.size() * sizeof(float)));
  if (static_cast<std::size_t>(in.gcount()) != t.data.size() * sizeof(float) || in.peek() != EOF) {
    failTest(file.string() + ": size does not match shape " + hepzoo::toString(t.shape));
  }
  return t;
}

struct Case {
  fs::path dir;
  json meta;
  std::map<std::string, hepzoo::Tensor> inputs;
  std::map<std::string, hepzoo::Tensor> golden;
  std::vector<std::int64_t> offsets;

  explicit Case(const fs::path& d) : dir(d) {
    std::ifstream in(dir / "case.json");
    if (!in) failTest((dir / "case.json").string() + ": cannot open");
    meta = json::parse(in);
    for (const auto& [name, spec] : meta.at("inputs").items()) inputs[name] = readTensor(dir, spec);
    for (const auto& [name, spec] : meta.at("outputs").items()) golden[name] = readTensor(dir, spec);
    if (meta.contains("offsets")) offsets = meta["offsets"].get<std::vector<std::int64_t>>();
  }

  hepzoo::SessionOptions options() const {
    hepzoo::SessionOptions o;
    o.batch_size = meta.value("batch_size", std::size_t{32});
    o.size_buckets = meta.value("size_buckets", std::vector<std::int64_t>{});
    return o;
  }

  hepzoo::Inputs inputViews() const {
    hepzoo::Inputs views;
    for (const auto& [name, t] : inputs) views[name] = t.view();
    return views;
  }

  /// MLPF: event e as a view of the flat features.
  hepzoo::ConstTensor event(const std::string& features, std::size_t e) const {
    const hepzoo::Tensor& x = inputs.at(features);
    const std::int64_t f = x.shape[1];
    return {x.data.data() + offsets[e] * f, {offsets[e + 1] - offsets[e], f}};
  }
};

std::string featuresInput(const hepzoo::ModelCard& card) {
  for (const auto& t : card.inputs)
    if (t.dtype == "float32") return t.name;
  failTest("no float32 input in the card");
}

/// |a - b| <= atol + rtol * |b| everywhere (b: the Python golden); prints the largest differences.
void compareTolerance(const std::string& label, const hepzoo::Tensor& got, const hepzoo::Tensor& want, double atol,
                      double rtol) {
  if (got.shape != want.shape) {
    failTest(label + ": shape " + hepzoo::toString(got.shape) + " != golden " + hepzoo::toString(want.shape));
  }
  double max_abs = 0.0;
  double max_violation = -std::numeric_limits<double>::infinity();
  for (std::size_t i = 0; i < got.data.size(); ++i) {
    const double a = got.data[i];
    const double b = want.data[i];
    const double diff = std::fabs(a - b);
    const double violation = diff - (atol + rtol * std::fabs(b));
    if (!(violation <= 0.0)) {
      failTest(label + ": value " + std::to_string(i) + " is " + std::to_string(a) + ", golden " + std::to_string(b) +
               " (|diff| " + std::to_string(diff) + " > atol + rtol*|golden|)");
    }
    max_abs = std::max(max_abs, diff);
    max_violation = std::max(max_violation, violation);
  }
  std::cout << json{{"check", label}, {"max_abs_diff", max_abs}, {"n", got.data.size()}}.dump() << "\n";
}

void compareBitwise(const std::string& label, const hepzoo::Tensor& got, const hepzoo::Tensor& want) {
  if (got.shape != want.shape || got.data.size() != want.data.size() ||
      std::memcmp(got.data.data(), want.data.data(), got.data.size() * sizeof(float)) != 0) {
    failTest(label + ": not bitwise equal");
  }
}

void compareAllBitwise(const std::string& label, const hepzoo::Outputs& got, const hepzoo::Outputs& want) {
  if (got.size() != want.size()) failTest(label + ": different output names");
  for (const auto& [name, t] : want) compareBitwise(label + " '" + name + "'", got.at(name), t);
}

/// A slice of rows [begin, end) of every tensor in `outputs`, as owned tensors.
hepzoo::Outputs sliceRows(const hepzoo::Outputs& outputs, std::int64_t begin, std::int64_t end) {
  hepzoo::Outputs out;
  for (const auto& [name, t] : outputs) {
    const std::int64_t width = t.shape[0] ? static_cast<std::int64_t>(t.data.size()) / t.shape[0] : 0;
    hepzoo::Tensor& s = out[name];
    s.shape = t.shape;
    s.shape[0] = end - begin;
    s.data.assign(t.data.begin() + begin * width, t.data.begin() + end * width);
  }
  return out;
}

hepzoo::Outputs allocateLike(const hepzoo::Outputs& like) {
  hepzoo::Outputs out;
  for (const auto& [name, t] : like) out[name] = {t.shape, std::vector<float>(t.data.size(), std::nanf(""))};
  return out;
}

hepzoo::OutputBuffers buffersOf(hepzoo::Outputs& out) {
  hepzoo::OutputBuffers b;
  for (auto& [name, t] : out) b[name] = t.view();
  return b;
}

// ---- sha256 ----------------------------------------------------------------------------------------------------

int sha256Vectors() {
  const std::vector<std::pair<std::string, std::string>> vectors = {
      {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
      {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
      {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
      {std::string(1000000, 'a'), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"},
  };
  for (const auto& [message, digest] : vectors) {
    const std::string got = hepzoo::sha256Hex(message.data(), message.size());
    if (got != digest) failTest("sha256 of a " + std::to_string(message.size()) + "-byte message: " + got + " != " + digest);
  }
  std::cout << "sha256 vectors: " << vectors.size() << " ok\n";
  return 0;
}

// ---- one-line errors ---------------------------------------------------------------------------------------------

int oneLine() {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"card.json: bad", "card.json: bad"},
      {"a\nb", "a b"},
      {"model.onnx: load failed:\r\n\t[ONNXRuntimeError] : 7 :\n  detail\n\n", "model.onnx: load failed: [ONNXRuntimeError] : 7 :   detail"},
      {std::string("x\0y", 3) + "\x7f" + "z", "x y z"},
      {"\n", ""},
  };
  for (const auto& [raw, want] : cases) {
    const std::string got = hepzoo::Error(raw).what();
    if (got != want) failTest("hepzoo::Error(" + json(raw).dump() + ").what() is " + json(got).dump() + ", not " + json(want).dump());
  }
  std::cout << "one-line: ok\n";
  return 0;
}

// ---- parity ----------------------------------------------------------------------------------------------------

int parity(const fs::path& release, const fs::path& case_dir) {
  const Case c(case_dir);
  const hepzoo::Session session(release, c.options());
  const hepzoo::ModelCard& card = session.card();
  const std::string label = card.name + "/" + case_dir.filename().string();
  if (card.family == "mlpf") {
    const std::string features = featuresInput(card);
    const hepzoo::Outputs flat = session.runElements(c.inputs.at(features).view(), c.offsets);
    for (const auto& [name, want] : c.golden) compareTolerance(label + " runElements '" + name + "'", flat.at(name), want, card.atol, card.rtol);
    // the same events through the other entry points
    std::vector<hepzoo::ConstTensor> events;
    for (std::size_t e = 0; e + 1 < c.offsets.size(); ++e) events.push_back(c.event(features, e));
    const std::vector<hepzoo::Outputs> per_event = session.run(events);
    hepzoo::Outputs into = allocateLike(flat);
    session.runElementsInto(c.inputs.at(features).view(), c.offsets, buffersOf(into));
    compareAllBitwise(label + " runElementsInto vs runElements", into, flat);
    for (std::size_t e = 0; e < events.size(); ++e) {
      const hepzoo::Outputs want = sliceRows(flat, c.offsets[e] - c.offsets[0], c.offsets[e + 1] - c.offsets[0]);
      // run(events) batches exactly as runElements does: bitwise equal
      compareAllBitwise(label + " run(events) event " + std::to_string(e), per_event[e], want);
      // run(event) pads the event alone: equal to the golden within tolerance
      const hepzoo::Outputs single = session.run(events[e]);
      hepzoo::Outputs single_into = allocateLike(single);
      session.runInto(events[e], buffersOf(single_into));
      compareAllBitwise(label + " runInto(event) vs run(event) event " + std::to_string(e), single_into, single);
      const hepzoo::Outputs golden = sliceRows(c.golden, c.offsets[e] - c.offsets[0], c.offsets[e + 1] - c.offsets[0]);
      for (const auto& [name, t] : golden) {
        compareTolerance(label + " run(event) event " + std::to_string(e) + " '" + name + "'", single.at(name), t, card.atol, card.rtol);
      }
    }
  } else {
    const hepzoo::Outputs out = session.run(c.inputViews());
    for (const auto& [name, want] : c.golden) compareTolerance(label + " run '" + name + "'", out.at(name), want, card.atol, card.rtol);
    hepzoo::Outputs into = allocateLike(out);
    session.runInto(c.inputViews(), buffersOf(into));
    compareAllBitwise(label + " runInto vs run", into, out);
  }
  std::cout << "PARITY OK " << label << "\n";
  return 0;
}

// ---- flash-sim sample(seed) -----------------------------------------------------------------------------------

/// sample(context, seed): the same seed gives the same outputs, the returned noise reproduces them through run(),
/// the noise looks standard normal. Prints the sha256 of the output bytes (pytest compares seeds).
int sample(const fs::path& release, const fs::path& case_dir, std::uint64_t seed) {
  const Case c(case_dir);
  const hepzoo::Session session(release);
  const hepzoo::ModelCard& card = session.card();
  std::string context_name;
  for (const auto& t : card.inputs)
    if (!card.isNoise(t.name)) context_name = t.name;
  const hepzoo::ConstTensor context = c.inputs.at(context_name).view();
  const hepzoo::Outputs first = session.sample(context, seed);
  compareAllBitwise("sample twice", session.sample(context, seed), first);
  hepzoo::Inputs inputs{{context_name, context}};
  for (const std::string& noise : card.noise_inputs) inputs[noise] = first.at(noise).view();
  hepzoo::Outputs graph_only = first;
  for (const std::string& noise : card.noise_inputs) graph_only.erase(noise);
  compareAllBitwise("run(context, returned noise) vs sample", session.run(inputs), graph_only);
  json report = {{"seed", seed}};
  for (const std::string& noise : card.noise_inputs) {
    const std::vector<float>& v = first.at(noise).data;
    double sum = 0.0, sum2 = 0.0;
    for (float x : v) {
      sum += x;
      sum2 += static_cast<double>(x) * x;
    }
    const double mean = sum / static_cast<double>(v.size());
    report[noise] = {{"n", v.size()}, {"mean", mean}, {"std", std::sqrt(sum2 / static_cast<double>(v.size()) - mean * mean)}};
  }
  std::string bytes;
  for (const auto& [name, t] : graph_only) bytes.append(reinterpret_cast<const char*>(t.data.data()), t.data.size() * sizeof(float));
  report["outputs_sha256"] = hepzoo::sha256Hex(bytes.data(), bytes.size());
  std::cout << report.dump() << "\n";
  return 0;
}

// ---- threads ---------------------------------------------------------------------------------------------------

int threads(const fs::path& release, const fs::path& case_dir, int n_threads, int n_calls) {
  const Case c(case_dir);
  hepzoo::SessionOptions options = c.options();
  options.intra_op_threads = 1;
  const hepzoo::Session session(release, options);
  const hepzoo::ModelCard& card = session.card();

  // Work items: MLPF events of the case up to 256 elements (empty ones included); flash-sim row slices.
  std::vector<std::function<hepzoo::Outputs()>> run_item;
  std::vector<std::function<void(const hepzoo::OutputBuffers&)>> run_into_item;
  if (card.family == "mlpf") {
    const std::string features = featuresInput(card);
    for (std::size_t e = 0; e + 1 < c.offsets.size(); ++e) {
      if (c.offsets[e + 1] - c.offsets[e] > 256) continue;
      const hepzoo::ConstTensor ev = c.event(features, e);
      run_item.emplace_back([&session, ev] { return session.run(ev); });
      run_into_item.emplace_back([&session, ev](const hepzoo::OutputBuffers& b) { session.runInto(ev, b); });
    }
  } else {
    const std::int64_t rows = c.inputs.begin()->second.shape[0];
    for (std::int64_t begin = 0, len = 1; begin < rows; begin += len, len = len * 3 % 61 + 1) {
      const std::int64_t end = std::min(rows, begin + len);
      hepzoo::Inputs slice;
      for (const auto& [name, t] : c.inputs) {
        const std::int64_t width = static_cast<std::int64_t>(t.data.size()) / t.shape[0];
        hepzoo::Shape shape = t.shape;
        shape[0] = end - begin;
        slice[name] = {t.data.data() + begin * width, shape};
      }
      run_item.emplace_back([&session, slice] { return session.run(slice); });
      run_into_item.emplace_back([&session, slice](const hepzoo::OutputBuffers& b) { session.runInto(slice, b); });
    }
  }
  if (run_item.empty()) failTest("no work items in " + case_dir.string());

  std::vector<hepzoo::Outputs> serial;
  for (const auto& f : run_item) serial.push_back(f());

  std::atomic<long> calls{0};
  std::atomic<long> mismatches{0};
  std::mutex error_mutex;
  std::exception_ptr error;
  std::string first_mismatch;
  std::vector<std::thread> pool;
  for (int t = 0; t < n_threads; ++t) {
    pool.emplace_back([&, t] {
      try {
        for (int i = 0; i < n_calls; ++i) {
          const std::size_t item = static_cast<std::size_t>(t * 7 + i * 3) % run_item.size();
          hepzoo::Outputs got;
          if (i % 2 == 0) {
            got = run_item[item]();
          } else {  // caller-owned buffers, as a framework module would hold them
            got = allocateLike(serial[item]);
            run_into_item[item](buffersOf(got));
          }
          ++calls;
          for (const auto& [name, want] : serial[item]) {
            const hepzoo::Tensor& g = got.at(name);
            if (g.shape != want.shape || std::memcmp(g.data.data(), want.data.data(), want.data.size() * sizeof(float)) != 0) {
              ++mismatches;
              std::lock_guard<std::mutex> lock(error_mutex);
              if (first_mismatch.empty()) first_mismatch = "thread " + std::to_string(t) + " call " + std::to_string(i) + " item " + std::to_string(item) + " output '" + name + "'";
            }
          }
        }
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
      }
    });
  }
  for (std::thread& th : pool) th.join();
  if (error) std::rethrow_exception(error);
  std::cout << json{{"model", card.name}, {"threads", n_threads}, {"calls", calls.load()}, {"items", run_item.size()},
                    {"mismatches", mismatches.load()}}.dump()
            << "\n";
  if (mismatches != 0) failTest("threaded outputs differ from serial ones, first: " + first_mismatch);
  if (calls != static_cast<long>(n_threads) * n_calls) failTest("not every call ran");
  return 0;
}

// ---- bad input -------------------------------------------------------------------------------------------------

/// Plain finite inputs of the right shapes: MLPF events of `n` elements, flash-sim [n, ...] tensors.
hepzoo::Tensor filled(const hepzoo::Shape& shape, float value = 0.5f) {
  return {shape, std::vector<float>(static_cast<std::size_t>(hepzoo::numElements(shape)), value)};
}

std::map<std::string, hepzoo::Tensor> rowInputs(const hepzoo::ModelCard& card, std::int64_t rows) {
  std::map<std::string, hepzoo::Tensor> out;
  for (const auto& spec : card.inputs) {
    hepzoo::Shape shape{rows};
    const hepzoo::Shape tail = spec.tail();
    shape.insert(shape.end(), tail.begin(), tail.end());
    out[spec.name] = filled(shape);
  }
  return out;
}

hepzoo::Inputs views(const std::map<std::string, hepzoo::Tensor>& tensors) {
  hepzoo::Inputs v;
  for (const auto& [name, t] : tensors) v[name] = t.view();
  return v;
}

std::string contextInput(const hepzoo::ModelCard& card) {
  for (const auto& t : card.inputs)
    if (!card.isNoise(t.name)) return t.name;
  failTest("no context input");
}

json shapes(const hepzoo::Outputs& out) {
  json j = json::object();
  for (const auto& [name, t] : out) j[name] = t.shape;
  return j;
}

int badInput(const std::string& kind, const fs::path& release) {
  if (kind == "load") {
    hepzoo::Session session(release);
    std::cout << "LOADED " << session.card().name << "\n";
    return 0;
  }
  if (kind == "cuda") {
    hepzoo::SessionOptions options;
    options.backend = hepzoo::Backend::CUDA;
    hepzoo::Session session(release, options);
    std::cout << "LOADED " << session.card().name << " on CUDA\n";
    return 0;
  }
  const hepzoo::Session session(release);
  const hepzoo::ModelCard& card = session.card();
  const bool mlpf = card.family == "mlpf";
  const std::int64_t width = mlpf ? card.input(featuresInput(card)).shape.back() : 0;
  if (kind == "features") {
    if (mlpf) {
      const hepzoo::Tensor event = filled({10, width - 1});
      session.run(event.view());
    } else {
      auto inputs = rowInputs(card, 4);
      const std::string context = contextInput(card);
      inputs[context] = filled({4, inputs[context].shape[1] - 1});
      session.run(views(inputs));
    }
  } else if (kind == "nan" || kind == "inf") {
    const float bad = kind == "nan" ? std::nanf("") : std::numeric_limits<float>::infinity();
    if (mlpf) {  // event 1 of three, element 3, feature 1
      std::vector<hepzoo::Tensor> events = {filled({5, width}), filled({7, width}), filled({2, width})};
      events[1].data[3 * width + 1] = bad;
      session.run(std::vector<hepzoo::ConstTensor>{events[0].view(), events[1].view(), events[2].view()});
    } else {  // row 2, column 1 of the context (nan) or of the first noise input (inf)
      auto inputs = rowInputs(card, 4);
      const std::string name = kind == "nan" ? contextInput(card) : card.noise_inputs.at(0);
      hepzoo::Tensor& t = inputs[name];
      t.data[2 * (t.data.size() / 4) + 1] = bad;
      session.run(views(inputs));
    }
  } else if (kind == "empty") {  // not an error: outputs with zero rows
    json report;
    if (mlpf) {
      const hepzoo::Tensor empty = filled({0, width});
      const hepzoo::Tensor some = filled({3, width});
      report["run(event)"] = shapes(session.run(empty.view()));
      const auto per_event = session.run(std::vector<hepzoo::ConstTensor>{some.view(), empty.view(), some.view()});
      report["run(events)[1]"] = shapes(per_event[1]);
      report["run(events)[0]"] = shapes(per_event[0]);
      hepzoo::Outputs into = session.run(empty.view());
      session.runInto(empty.view(), buffersOf(into));
      report["runElements(no events)"] = shapes(session.runElements(empty.view(), {0}));
    } else {
      report["run(0 rows)"] = shapes(session.run(views(rowInputs(card, 0))));
      report["sample(0 rows)"] = shapes(session.sample(rowInputs(card, 0).at(contextInput(card)).view(), 1));
    }
    std::cout << "EMPTY " << report.dump() << "\n";
    return 0;
  } else if (kind == "buffer") {  // a caller buffer one row short
    hepzoo::Outputs out;
    if (mlpf) {
      const hepzoo::Tensor event = filled({6, width});
      out = session.run(event.view());
      out.begin()->second.shape[0] = 5;
      session.runInto(event.view(), buffersOf(out));
    } else {
      const auto inputs = rowInputs(card, 6);
      out = session.run(views(inputs));
      out.begin()->second.shape[0] = 5;
      session.runInto(views(inputs), buffersOf(out));
    }
  } else if (kind == "offsets") {
    const hepzoo::Tensor flat = filled({10, width});
    session.runElements(flat.view(), {0, 6, 4, 10});
  } else if (kind == "family") {  // the other family's entry point
    if (mlpf) {
      session.run(views(rowInputs(card, 2)));
    } else {
      session.run(hepzoo::Tensor{{2, 3}, std::vector<float>(6, 0.0f)}.view());
    }
  } else {
    failTest("unknown bad-input kind '" + kind + "'");
  }
  std::cout << "NO ERROR\n";
  return 0;
}

int usage() {
  std::cerr << "usage: hepzoo_tests sha256-vectors | one-line | sha256 FILE... | parity RELEASE CASE_DIR |"
               " sample RELEASE CASE_DIR SEED | threads RELEASE CASE_DIR THREADS CALLS | bad-input KIND RELEASE\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  try {
    if (args.size() == 1 && args[0] == "sha256-vectors") return sha256Vectors();
    if (args.size() == 1 && args[0] == "one-line") return oneLine();
    if (args.size() >= 2 && args[0] == "sha256") {
      for (std::size_t i = 1; i < args.size(); ++i) std::cout << hepzoo::sha256File(args[i]) << "  " << args[i] << "\n";
      return 0;
    }
    if (args.size() == 3 && args[0] == "parity") return parity(args[1], args[2]);
    if (args.size() == 4 && args[0] == "sample") return sample(args[1], args[2], std::stoull(args[3]));
    if (args.size() == 5 && args[0] == "threads") return threads(args[1], args[2], std::stoi(args[3]), std::stoi(args[4]));
    if (args.size() == 3 && args[0] == "bad-input") return badInput(args[1], args[2]);
    return usage();
  } catch (const hepzoo::Error& e) {
    std::cout << "ERROR: " << e.what() << "\n";
    return 3;
  } catch (const Failure& e) {
    std::cout << "FAILED: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cout << "UNEXPECTED " << typeid(e).name() << ": " << e.what() << "\n";
    return 4;
  }
}
