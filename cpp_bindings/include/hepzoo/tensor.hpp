// Float32 tensors at the API edge: views of caller memory (ConstTensor, MutableTensor) and owned results (Tensor).
// All are row-major (C order). Shapes are explicit so that a wrong feature count is caught, not misread.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace hepzoo {

using Shape = std::vector<std::int64_t>;

/// Product of the dimensions (1 for a scalar shape).
std::int64_t numElements(const Shape& shape);
/// "[3, 20]"
std::string toString(const Shape& shape);

/// Read-only view of caller-owned float32 data; `data` may be null only when the shape holds no element.
struct ConstTensor {
  const float* data = nullptr;
  Shape shape;
};

/// Writable view of a caller-owned float32 buffer (runInto writes exactly numElements(shape) values).
struct MutableTensor {
  float* data = nullptr;
  Shape shape;

  operator ConstTensor() const { return {data, shape}; }  // NOLINT: a writable view is also a readable one
};

/// An owned float32 result.
struct Tensor {
  Shape shape;
  std::vector<float> data;

  ConstTensor view() const { return {data.data(), shape}; }
  MutableTensor view() { return {data.data(), shape}; }
};

using Inputs = std::map<std::string, ConstTensor>;          ///< by graph input name (flash-sim)
using Outputs = std::map<std::string, Tensor>;              ///< by graph output name
using OutputBuffers = std::map<std::string, MutableTensor>; ///< by graph output name, caller-owned

}  // namespace hepzoo
