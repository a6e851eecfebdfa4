// SHA-256 (OpenSSL libcrypto), used to check model.onnx against its card before loading it.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>

namespace hepzoo {

/// Lowercase hex digest of `size` bytes at `data`.
std::string sha256Hex(const void* data, std::size_t size);
/// Lowercase hex digest of a file's contents, read in 1 MiB blocks. Throws hepzoo::Error naming the file.
std::string sha256File(const std::filesystem::path& path);

}  // namespace hepzoo
