#!/usr/bin/env bash
# Headers-only dependencies for the C++ bindings on machines without development files (Debian 12 here).
#
#   fetch_deps.sh BUILD_DIR PYTHON
#
# 1. Downloads Debian trixie's libonnxruntime-dev (C/C++ API headers) and nlohmann-json3-dev with apt through a
#    configuration private to BUILD_DIR/deps/apt (own sources.list, lists, cache and an empty dpkg status: nothing
#    on the machine changes, no root needed), from the same archive URL the machine's apt already uses, and
#    unpacks them with `dpkg -x` into BUILD_DIR/deps/root. Done once (stamp file), atomically.
# 2. Lays out an ONNX Runtime prefix BUILD_DIR/deps/onnxruntime: include/ (those headers) and lib/ with the
#    libonnxruntime.so / .so.1 symlinks to the library inside PYTHON's onnxruntime wheel (the C API is versioned,
#    so the 1.21 headers work with the wheel's newer runtime). Re-done every call (cheap), so a rebuilt venv is
#    picked up; nothing is written into the venv.
#
# HEPZOO_DEBIAN_MIRROR overrides the archive URL; HEPZOO_DEBIAN_SUITE (default trixie) the suite.
set -euo pipefail

build_dir=${1:?usage: fetch_deps.sh BUILD_DIR PYTHON}
python=${2:?usage: fetch_deps.sh BUILD_DIR PYTHON}
suite=${HEPZOO_DEBIAN_SUITE:-trixie}
packages=(libonnxruntime-dev nlohmann-json3-dev)
keyring=/usr/share/keyrings/debian-archive-keyring.gpg

mkdir -p "$build_dir/deps"
deps=$(cd "$build_dir/deps" && pwd)
stamp="$deps/root/.fetched-$suite"

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

if [ ! -f "$stamp" ]; then
    mirror=${HEPZOO_DEBIAN_MIRROR:-$(archive_url || true)}
    if [ -z "$mirror" ]; then
        echo "fetch_deps.sh: no Debian archive URL (.../debian) in /etc/apt/sources.list or /etc/apt/sources.list.d/*;" \
             "set HEPZOO_DEBIAN_MIRROR, or configure cmake with ONNXRUNTIME_ROOT and nlohmann_json yourself" >&2
        exit 1
    fi
    [ -f "$keyring" ] || { echo "fetch_deps.sh: $keyring missing (package debian-archive-keyring)" >&2; exit 1; }
    apt_dir="$deps/apt"
    rm -rf "$apt_dir"
    mkdir -p "$apt_dir"/{etc/sources.list.d,etc/preferences.d,etc/apt.conf.d,lists/partial,cache/archives/partial,debs}
    : > "$apt_dir/status"
    echo "deb [signed-by=$keyring] ${mirror%/} $suite main" > "$apt_dir/etc/sources.list"
    apt_opts=(
        -o "Dir::Etc::sourcelist=$apt_dir/etc/sources.list"
        -o "Dir::Etc::sourceparts=$apt_dir/etc/sources.list.d"
        -o "Dir::Etc::preferencesparts=$apt_dir/etc/preferences.d"
        -o "Dir::Etc::parts=$apt_dir/etc/apt.conf.d"
        -o "Dir::State::Lists=$apt_dir/lists"
        -o "Dir::State::status=$apt_dir/status"
        -o "Dir::Cache=$apt_dir/cache"
        -o "Debug::NoLocking=1"
        -o "APT::Sandbox::User=$(id -un)"
    )
    echo "fetch_deps.sh: ${packages[*]} from $mirror $suite (private apt configuration in $apt_dir)"
    apt-get "${apt_opts[@]}" -qq update
    (cd "$apt_dir/debs" && apt-get "${apt_opts[@]}" -qq download "${packages[@]}")
    tmp="$deps/root.tmp"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    for deb in "$apt_dir"/debs/*.deb; do
        dpkg -x "$deb" "$tmp"
        basename "$deb" >> "$tmp/.packages"
    done
    for header in onnxruntime/onnxruntime_cxx_api.h nlohmann/json.hpp; do
        [ -f "$tmp/usr/include/$header" ] || { echo "fetch_deps.sh: $header not in the downloaded packages" >&2; exit 1; }
    done
    touch "$tmp/.fetched-$suite"
    rm -rf "$deps/root"
    mv "$tmp" "$deps/root"
    rm -rf "$apt_dir"  # the package lists (about 20 MB) are not needed any more
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
# execution-provider libraries (CUDA, TensorRT in onnxruntime-gpu) are loaded from the directory of the library
for provider in "$(dirname "$lib")"/libonnxruntime_providers_*.so; do
    [ -e "$provider" ] && ln -sfn "$provider" "$prefix/lib/$(basename "$provider")"
done
exit 0
