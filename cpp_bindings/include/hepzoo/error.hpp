// hepzoo::Error: every failure of the bindings (bad card, tampered model, bad input) is one of these.
#pragma once

#include <stdexcept>
#include <string>

namespace hepzoo {

/// Thrown by every hepzoo call; the message names the file, tensor, event or buffer at fault and what is wrong.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace hepzoo
