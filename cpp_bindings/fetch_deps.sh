#!/usr/bin/env bash
# Headers-only dependencies for the C++ bindings on machines without development files (Debian 12 here).
#
#   fetch_deps.sh BUILD_DIR PYTHON
#
# 1. Downloads Debian trixie's libonnxruntime-dev (C/C++ API headers) and nlohmann-json3-dev with apt through a
#    configuration private to BUILD_DIR/deps/apt-trixie (own sources.list, lists, cache and an empty dpkg status:
#    nothing on the machine changes, no root needed), from the same archive URL the machine's apt already uses,
#    and unpacks them with `dpkg -x` into BUILD_DIR/deps/root. Done once (a .fetched mark), atomically.
#    Without system OpenSSL headers, libssl-dev of the machine's own release is fetched the same way.
# 2. Lays out an ONNX Runtime prefix BUILD_DIR/deps/onnxruntime: include/ (those headers) and lib/ with the
#    libonnxruntime.so / .so.1 symlinks to the library inside PYTHON's onnxruntime wheel (the C API is versioned,
#    so the 1.21 headers work with the wheel's newer runtime). Re-done every call (cheap), so a rebuilt venv is
#    picked up; nothing is written into the venv.
# 3. Writes BUILD_DIR/deps/cmake-args: the -D options that point CMake at all of the above, and
#    HEPZOO_ONNXRUNTIME_INSTALL=link (an installed libhepzoo links to the wheel's library, not to BUILD_DIR).
#
# HEPZOO_DEBIAN_MIRROR overrides the archive URL; HEPZOO_DEBIAN_SUITE (default trixie) the suite;
# HEPZOO_FETCH_OPENSSL=1 fetches libssl-dev even where the system has OpenSSL headers (to test that path).
set -euo pipefail

build_dir=${1:?usage: fetch_deps.sh BUILD_DIR PYTHON}
python=${2:?usage: fetch_deps.sh BUILD_DIR PYTHON}
suite=${HEPZOO_DEBIAN_SUITE:-trixie}
packages=(libonnxruntime-dev nlohmann-json3-dev)
keyring=/usr/share/keyrings/debian-archive-keyring.gpg

mkdir -p "$build_dir/deps"
deps=$(cd "$build_dir/deps" && pwd)

# The first Debian archive URL (.../debian) among the machine's apt sources, deb822 (.sources) or one-line (.list).
archive_url() {
    {
        for f in /etc/apt/sources.list.d/*.sources; do
            [ -f "$f" ] && awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }' "$f"
        done
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            [ -f "$f" ] && awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; break } }' "$f"
        done
    } | grep -E '/debian/?$' | head -n 1
}

apt_opts=()
# private_apt DIR SUITE: an apt configuration of its own under DIR for "deb MIRROR SUITE main", lists updated
private_apt() {
    local dir=$1 suite=$2 mirror
    mirror=${HEPZOO_DEBIAN_MIRROR:-$(archive_url || true)}
    if [ -z "$mirror" ]; then
        echo "fetch_deps.sh: no Debian archive URL (.../debian) in /etc/apt/sources.list or /etc/apt/sources.list.d/*;" \
             "set HEPZOO_DEBIAN_MIRROR, or configure cmake with ONNXRUNTIME_ROOT and nlohmann_json yourself" >&2
        exit 1
    fi
    [ -f "$keyring" ] || { echo "fetch_deps.sh: $keyring missing (package debian-archive-keyring)" >&2; exit 1; }
    rm -rf "$dir"
    mkdir -p "$dir"/{etc/sources.list.d,etc/preferences.d,etc/apt.conf.d,lists/partial,cache/archives/partial,debs}
    : > "$dir/status"
    echo "deb [signed-by=$keyring] ${mirror%/} $suite main" > "$dir/etc/sources.list"
    apt_opts=(
        -o "Dir::Etc::sourcelist=$dir/etc/sources.list"
        -o "Dir::Etc::sourceparts=$dir/etc/sources.list.d"
        -o "Dir::Etc::preferencesparts=$dir/etc/preferences.d"
        -o "Dir::Etc::parts=$dir/etc/apt.conf.d"
        -o "Dir::State::Lists=$dir/lists"
        -o "Dir::State::status=$dir/status"
        -o "Dir::Cache=$dir/cache"
        -o "Debug::NoLocking=1"
        -o "APT::Sandbox::User=$(id -un)"
    )
    echo "fetch_deps.sh: Debian $suite from $mirror (private apt configuration in $dir)"
    apt-get "${apt_opts[@]}" -qq update
}

# fetch DEST SUITE HEADER... -- PACKAGE...: download PACKAGEs from SUITE and unpack them into DEST (atomically,
# once: DEST/.fetched marks it done), checking that each HEADER (relative to usr/include) arrived.
fetch() {
    local dest=$1 suite=$2 headers=() packages=()
    shift 2
    while [ "$1" != "--" ]; do headers+=("$1"); shift; done
    shift
    packages=("$@")
    [ -f "$dest/.fetched" ] && return 0
    local apt_dir="$deps/apt-$suite" tmp="$dest.tmp"
    private_apt "$apt_dir" "$suite"
    (cd "$apt_dir/debs" && apt-get "${apt_opts[@]}" -qq download "${packages[@]}")
    rm -rf "$tmp"
    mkdir -p "$tmp"
    for deb in "$apt_dir"/debs/*.deb; do
        dpkg -x "$deb" "$tmp"
        basename "$deb" >> "$tmp/.packages"
    done
    for header in "${headers[@]}"; do
        [ -f "$tmp/usr/include/$header" ] || { echo "fetch_deps.sh: $header not in ${packages[*]}" >&2; exit 1; }
    done
    touch "$tmp/.fetched"
    rm -rf "$dest"
    mv "$tmp" "$dest"
    rm -rf "$apt_dir"  # the package lists (about 20 MB) are not needed any more
}

fetch "$deps/root" "$suite" onnxruntime/onnxruntime_cxx_api.h nlohmann/json.hpp -- "${packages[@]}"
# the installed libhepzoo finds libonnxruntime.so.1 through symlinks in its prefix to the wheel's library
# (HEPZOO_ONNXRUNTIME_INSTALL=link), not through this build folder
cmake_args=("-DONNXRUNTIME_ROOT=$deps/onnxruntime" "-DCMAKE_PREFIX_PATH=$deps/root/usr" "-DHEPZOO_ONNXRUNTIME_INSTALL=link")

# OpenSSL (libcrypto, for sha256): the system's headers, else libssl-dev of the machine's own release (its
# headers only; the library is the machine's libcrypto.so.3, present wherever Python's ssl module works).
if [ ! -f /usr/include/openssl/evp.h ] || [ -n "${HEPZOO_FETCH_OPENSSL:-}" ]; then
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    crypto=$(ldconfig -p | awk '$1 == "libcrypto.so.3" { print $NF; exit }')
    [ -n "$codename" ] && [ -n "$crypto" ] || { echo "fetch_deps.sh: no OpenSSL headers and no way to fetch them" >&2; exit 1; }
    fetch "$deps/openssl" "$codename" openssl/evp.h -- libssl-dev
    # Debian keeps the architecture's configuration headers in usr/include/<triplet>/openssl/: merge them in
    for header in "$deps"/openssl/usr/include/*/openssl/*.h; do
        [ -e "$header" ] && ln -sfn "$header" "$deps/openssl/usr/include/openssl/$(basename "$header")"
    done
    cmake_args+=("-DOPENSSL_INCLUDE_DIR=$deps/openssl/usr/include" "-DOPENSSL_CRYPTO_LIBRARY=$crypto")
fi

# The wheel's runtime library (libonnxruntime.so.1.NN.N, soname libonnxruntime.so.1).
lib=$("$python" - <<'PY'
import importlib.util, pathlib, sys
spec = importlib.util.find_spec("onnxruntime")  # located, not imported (fast)
if spec is None or not spec.submodule_search_locations:
    sys.exit(f"{sys.executable}: the onnxruntime package is not installed (make setup installs it)")
capi = pathlib.Path(spec.submodule_search_locations[0]).resolve() / "capi"
found = sorted(capi.glob("libonnxruntime.so.1.*"))
if not found:
    sys.exit(f"no libonnxruntime.so.1.* in {capi}")
print(found[-1])
PY
)
prefix="$deps/onnxruntime"
mkdir -p "$prefix/lib"
ln -sfn "$deps/root/usr/include/onnxruntime" "$prefix/include"
ln -sfn "$lib" "$prefix/lib/libonnxruntime.so.1"
ln -sfn libonnxruntime.so.1 "$prefix/lib/libonnxruntime.so"
printf '%s\n' "${cmake_args[@]}" > "$deps/cmake-args"  # read by `make cpp`
# execution-provider libraries (CUDA, TensorRT in onnxruntime-gpu) are loaded from the directory of the library
for provider in "$(dirname "$lib")"/libonnxruntime_providers_*.so; do
    [ -e "$provider" ] && ln -sfn "$provider" "$prefix/lib/$(basename "$provider")"
done
exit 0
