// hepzoo::Error: every failure of the bindings (bad card, tampered model, bad input) is one of these.
#pragma once

#include <stdexcept>
#include <string>

namespace hepzoo {

/// Thrown by every hepzoo call; the message is one line naming the file, tensor, event or buffer at fault and what
/// is wrong. One line by construction: any run of control characters (newlines, tabs: from ONNX Runtime's or the
/// JSON parser's messages, or from strings inside a card) becomes one space, trailing blanks are dropped.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(oneLine(message)) {}

  /// `text` on one line (see the class comment).
  static std::string oneLine(const std::string& text) {
    std::string out;
    out.reserve(text.size());
    bool in_control = false;
    for (const char c : text) {
      const bool control = static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
      if (control && !in_control) out += ' ';
      if (!control) out += c;
      in_control = control;
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out;
  }
};

}  // namespace hepzoo
