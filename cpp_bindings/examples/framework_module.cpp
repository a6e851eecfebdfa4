// A framework module in miniature: one hepzoo::Session shared by several worker threads (the framework's
// streams), each feeding events of varying size, as CMSSW/Gaudi modules would. Prints a summary.
//
//   framework_module RELEASE_DIR [--threads N] [--events N_PER_THREAD] [--seed S]
//
// MLPF: each event is a block of element rows whose columns are filled by feature *name* from the card (no
// hard-coded column indices); the module counts predicted candidates per class (argmax of cls_logits).
// Flash-sim: each event holds a varying number of generator objects; the module calls sample() with a
// per-event seed and counts objects kept as reconstructed (uniform draw < efficiency).
#include <hepzoo/hepzoo.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

struct Args {
  std::string release;
  int threads = 4;
  int events = 50;
  std::uint64_t seed = 1;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--threads") a.threads = std::stoi(value());
    else if (arg == "--events") a.events = std::stoi(value());
    else if (arg == "--seed") a.seed = std::stoull(value());
    else if (a.release.empty()) a.release = arg;
    else throw std::invalid_argument("unexpected argument " + arg);
  }
  if (a.release.empty() || a.threads < 1 || a.events < 0) {
    throw std::invalid_argument("usage: framework_module RELEASE_DIR [--threads N] [--events N_PER_THREAD] [--seed S]");
  }
  return a;
}

/// A plausible value for a feature, by its name in the card (0 for names this example does not know).
float plausible(const std::string& name, std::mt19937_64& rng, float phi, bool track) {
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::exponential_distribution<float> exponential(1.0f / 3.0f);
  if (name == "type") return track ? 1.0f : 2.0f;  // schema.ElementType: 1 track, 2 ECAL cluster
  if (name == "pt") return 0.5f + exponential(rng);
  if (name == "log_pt") return std::log(20.0f + 10.0f * exponential(rng));
  if (name == "eta" || name == "eta_calo") return 5.0f * uniform(rng) - 2.5f;
  if (name == "sin_phi" || name == "sin_phi_calo") return std::sin(phi);
  if (name == "cos_phi" || name == "cos_phi_calo") return std::cos(phi);
  if (name == "e") return 1.0f + 3.0f * exponential(rng);
  if (name == "charge") return track ? (uniform(rng) < 0.5f ? -1.0f : 1.0f) : 0.0f;
  if (name == "n_hits") return track ? 10.0f : 0.0f;
  if (name == "e_ecal" || name == "e_hcal") return track ? 0.0f : exponential(rng);
  if (name == "n_cells") return track ? 0.0f : 5.0f;
  if (name == "mass") return 5.0f + 10.0f * uniform(rng);
  if (name == "n_const") return 10.0f + std::floor(20.0f * uniform(rng));
  if (name == "n_pileup") return 20.0f;
  if (name.rfind("frac_", 0) == 0) return 0.25f;
  if (name == "is_hadron") return 1.0f;
  return 0.0f;
}

struct Totals {
  long events = 0;
  long objects = 0;  // elements (MLPF) or generator objects (flash-sim)
  std::vector<long> counts;  // per predicted class (MLPF) or {kept, lost} (flash-sim)
};

/// One worker: `n_events` events of varying size through the shared session.
Totals work(const hepzoo::Session& session, int n_events, std::uint64_t seed) {
  const hepzoo::ModelCard& card = session.card();
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  Totals totals;
  if (card.family == "mlpf") {
    const hepzoo::TensorSpec& spec = card.inputs.front();  // the float32 element features
    const auto n_features = static_cast<std::size_t>(spec.shape.back());
    totals.counts.assign(static_cast<std::size_t>(card.output("cls_logits").shape.back()), 0);
    std::vector<float> rows;
    hepzoo::Outputs out;  // reused between events: runInto writes into these caller-owned buffers
    for (int e = 0; e < n_events; ++e) {
      const std::int64_t n = static_cast<std::int64_t>(std::pow(uniform(rng), 2.0f) * 400.0f);  // many small, few large
      rows.assign(static_cast<std::size_t>(n) * n_features, 0.0f);
      for (std::int64_t i = 0; i < n; ++i) {
        const bool track = i < n / 2;  // tracks first, then clusters (schema order)
        const float phi = 6.2831853f * uniform(rng) - 3.1415927f;
        for (std::size_t f = 0; f < n_features; ++f) rows[i * n_features + f] = plausible(spec.feature_names.at(f), rng, phi, track);
      }
      for (const auto& o : card.outputs) {
        hepzoo::Tensor& t = out[o.name];
        t.shape = {n};
        const hepzoo::Shape tail = o.tail();
        t.shape.insert(t.shape.end(), tail.begin(), tail.end());
        t.data.resize(static_cast<std::size_t>(hepzoo::numElements(t.shape)));
      }
      hepzoo::OutputBuffers buffers;
      for (auto& [name, t] : out) buffers[name] = t.view();
      session.runInto({rows.data(), {n, static_cast<std::int64_t>(n_features)}}, buffers);
      const hepzoo::Tensor& logits = out.at("cls_logits");
      const std::size_t k = totals.counts.size();
      for (std::int64_t i = 0; i < n; ++i) {
        const float* row = logits.data.data() + i * static_cast<std::int64_t>(k);
        ++totals.counts[static_cast<std::size_t>(std::max_element(row, row + k) - row)];
      }
      ++totals.events;
      totals.objects += n;
    }
  } else {
    const hepzoo::TensorSpec* context = nullptr;
    for (const auto& t : card.inputs)
      if (!card.isNoise(t.name)) context = &t;
    const auto width = static_cast<std::size_t>(context->shape.back());
    totals.counts.assign(2, 0);
    std::vector<float> rows;
    for (int e = 0; e < n_events; ++e) {
      const std::int64_t n = static_cast<std::int64_t>(uniform(rng) * 30.0f);
      rows.assign(static_cast<std::size_t>(n) * width, 0.0f);
      for (std::int64_t i = 0; i < n; ++i) {
        const float phi = 6.2831853f * uniform(rng) - 3.1415927f;
        for (std::size_t f = 0; f < width; ++f) rows[i * width + f] = plausible(context->feature_names.at(f), rng, phi, true);
      }
      const hepzoo::Outputs out = session.sample({rows.data(), {n, static_cast<std::int64_t>(width)}}, rng());
      for (float eff : out.at("efficiency").data) ++totals.counts[uniform(rng) < eff ? 0 : 1];
      ++totals.events;
      totals.objects += n;
    }
  }
  return totals;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args args = parse(argc, argv);
    const hepzoo::Session session(args.release);  // one Session, shared by every thread
    const hepzoo::ModelCard& card = session.card();
    std::vector<Totals> results(static_cast<std::size_t>(args.threads));
    std::vector<std::thread> workers;
    std::mutex error_mutex;
    std::string error;
    const auto start = std::chrono::steady_clock::now();
    for (int t = 0; t < args.threads; ++t) {
      workers.emplace_back([&, t] {
        try {
          results[static_cast<std::size_t>(t)] = work(session, args.events, args.seed * 1000003u + static_cast<std::uint64_t>(t));
        } catch (const std::exception& e) {
          std::lock_guard<std::mutex> lock(error_mutex);
          error = "thread " + std::to_string(t) + ": " + e.what();
        }
      });
    }
    for (auto& w : workers) w.join();
    if (!error.empty()) throw std::runtime_error(error);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    Totals sum;
    sum.counts.assign(results.front().counts.size(), 0);
    for (const Totals& r : results) {
      sum.events += r.events;
      sum.objects += r.objects;
      for (std::size_t i = 0; i < r.counts.size(); ++i) sum.counts[i] += r.counts[i];
    }
    std::cout << card.name << " v" << card.version << " (" << card.family << "): " << args.threads << " threads, "
              << sum.events << " events, " << sum.objects << (card.family == "mlpf" ? " elements" : " objects") << " in "
              << std::fixed << std::setprecision(3) << seconds << " s (" << std::setprecision(1)
              << (seconds > 0 ? sum.events / seconds : 0.0) << " events/s)\n";
    if (card.family == "mlpf") {
      const auto& names = card.output("cls_logits").feature_names;
      std::cout << "predicted element slots per class:";
      for (std::size_t i = 0; i < sum.counts.size(); ++i) {
        std::cout << " " << (i < names.size() ? names[i] : std::to_string(i)) << "=" << sum.counts[i];
      }
      std::cout << "\n";
    } else {
      std::cout << "reconstructed=" << sum.counts[0] << " lost=" << sum.counts[1] << "\n";
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "framework_module: " << e.what() << "\n";
    return 1;
  }
}
