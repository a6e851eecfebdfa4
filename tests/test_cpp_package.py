"""The installed C++ package: ``cmake --install`` of the ``make cpp`` build into a prefix, then an application outside
the source tree (cpp_bindings/examples/consumer) built against that prefix alone, with ``find_package(hepzoo CONFIG)``
and with pkg-config, run on a zoo MLPF release and compared with the Python runtime.

Every command runs in an environment without LD_LIBRARY_PATH, CMAKE_PREFIX_PATH or PKG_CONFIG_PATH, so the prefix
must carry everything: the consumer finds libhepzoo by its RUNPATH, libhepzoo finds libonnxruntime by its own.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from hepzoo.export.card import load_card  # noqa: E402
from hepzoo.runtime import Session  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONSUMER = REPO / "cpp_bindings" / "examples" / "consumer"
RELEASE = REPO / "zoo" / "mlpf-gnnlsh" / "3"
COUNTS = [37, 0, 64, 129, 300, 1, 700, 65]  # elements per event: off-bucket sizes, a boundary, empty events
SEED = 19
PRIVATE_DEPS = ("onnxruntime", "nlohmann", "openssl", "find_dependency")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "CMAKE_PREFIX_PATH", "PKG_CONFIG_PATH")}
    return {**env, **extra}


def _run(*cmd: object, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, env=kw.pop("env", _env()), **kw)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _dynamic(library: Path, tag: str) -> list[str]:
    """The values of one dynamic-section entry (SONAME, RUNPATH, NEEDED) of an ELF file, by readelf."""
    out = _run("readelf", "-d", library).stdout
    return re.findall(rf"\({tag}\)\s+.*?\[(.*)\]", out)


def _parse(stdout: str) -> tuple[list[str], dict[str, np.ndarray]]:
    """The consumer's output (see hepzoo_consumer.cpp): the model line and every output tensor."""
    lines = stdout.splitlines()
    assert lines[-1] == "end", lines[-3:]
    model, outputs, i = lines[0].split(), {}, 1
    while lines[i] != "end":
        _, name, *dims = lines[i].split()
        shape = tuple(int(d) for d in dims)
        rows = lines[i + 1 : i + 1 + shape[0]]
        outputs[name] = np.array([r.split() for r in rows], np.float64).reshape(shape) if rows else np.zeros(shape)
        i += 1 + shape[0]
    return model, outputs


@pytest.fixture(scope="module")
def prefix(cpp_build, tmp_path_factory) -> Path:
    """``cmake --install`` of the ``make cpp`` build into a fresh prefix."""
    if shutil.which("readelf") is None:
        pytest.skip("readelf (binutils) is needed to read the installed library's SONAME and RUNPATH")
    prefix = tmp_path_factory.mktemp("hepzoo-prefix")
    _run("cmake", "--install", cpp_build, "--prefix", prefix)
    return prefix


@pytest.fixture(scope="module")
def consumer(prefix, tmp_path_factory) -> Path:
    """The consumer example configured and built out of tree against the prefix; its executable."""
    build = tmp_path_factory.mktemp("consumer-build")
    _run("cmake", "-S", CONSUMER, "-B", build, "-DCMAKE_BUILD_TYPE=Release", f"-DCMAKE_PREFIX_PATH={prefix}")
    cache = (build / "CMakeCache.txt").read_text()
    assert f"hepzoo_DIR:PATH={prefix / 'lib' / 'cmake' / 'hepzoo'}" in cache  # found in the prefix, nowhere else
    _run("cmake", "--build", build, "-j", "1")
    return build / "hepzoo_consumer"


@pytest.fixture(scope="module")
def seeded_input(make_features, tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """Seeded MLPF element rows as the consumer reads them (raw float32), and the rows and offsets themselves."""
    x, offsets = make_features(COUNTS, seed=SEED)
    assert x.shape[1] == load_card(RELEASE, verify_onnx=False).inputs[0].shape[-1]
    path = tmp_path_factory.mktemp("consumer-input") / "features.f32"
    np.ascontiguousarray(x, dtype="<f4").tofile(path)
    return path, x, offsets


def test_install_layout(prefix, cpp_build):
    files = {p.relative_to(prefix).as_posix() for p in prefix.rglob("*") if not p.is_dir()}
    headers = {f"include/hepzoo/{p.name}" for p in (REPO / "cpp_bindings" / "include" / "hepzoo").glob("*.hpp")}
    cmake = {f"lib/cmake/hepzoo/hepzoo-{n}.cmake" for n in ("config", "config-version", "targets", "targets-release")}
    library = {"lib/libhepzoo.so", "lib/libhepzoo.so.0", "lib/libhepzoo.so.0.1.0"}
    onnxruntime = {p for p in files if p.startswith("lib/hepzoo/")}
    assert files == headers | cmake | library | onnxruntime | {"lib/pkgconfig/hepzoo.pc"}
    # the library, its SONAME and namelink
    real = prefix / "lib" / "libhepzoo.so.0.1.0"
    assert not real.is_symlink() and os.readlink(prefix / "lib" / "libhepzoo.so.0") == real.name
    assert (prefix / "lib" / "libhepzoo.so").resolve() == real
    assert _dynamic(real, "SONAME") == ["libhepzoo.so.0"]
    # libonnxruntime.so.1 (make cpp's HEPZOO_ONNXRUNTIME_INSTALL=link): a link in the prefix to the venv's wheel,
    # reached by RUNPATH $ORIGIN/hepzoo, not by the build folder
    assert "libonnxruntime.so.1" in _dynamic(real, "NEEDED")
    assert _dynamic(real, "RUNPATH") == ["$ORIGIN/hepzoo"]
    capi = Path(importlib.util.find_spec("onnxruntime").submodule_search_locations[0]).resolve() / "capi"
    linked = (prefix / "lib" / "hepzoo" / "libonnxruntime.so.1").resolve()
    assert linked.parent == capi and linked.name.startswith("libonnxruntime.so.1.")
    # the CMake package: hepzoo::hepzoo from the prefix alone; no build-tree path, no private dependency
    targets = (prefix / "lib" / "cmake" / "hepzoo" / "hepzoo-targets.cmake").read_text()
    assert "add_library(hepzoo::hepzoo SHARED IMPORTED)" in targets
    assert 'INTERFACE_INCLUDE_DIRECTORIES "${_IMPORT_PREFIX}/include"' in targets
    for name in cmake:
        code = "\n".join(ln for ln in (prefix / name).read_text().splitlines() if not ln.lstrip().startswith("#"))
        assert str(REPO) not in code and str(cpp_build) not in code, name
        assert not [dep for dep in PRIVATE_DEPS if dep in code.lower()], name
    # the version file (SameMajorVersion: the consumer asks for 0.1)
    assert 'set(PACKAGE_VERSION "0.1.0")' in (prefix / "lib/cmake/hepzoo/hepzoo-config-version.cmake").read_text()


def test_consumer_matches_python_runtime(consumer, seeded_input):
    """The out-of-tree application's outputs equal Session.run_elements (ONNX Runtime CPU) within the card's
    tolerance; the run needs no LD_LIBRARY_PATH."""
    path, x, offsets = seeded_input
    proc = _run(consumer, RELEASE, path, ",".join(map(str, offsets)))
    model, got = _parse(proc.stdout)
    card = load_card(RELEASE)
    assert model == ["model", card.name, card.version, "mlpf"]
    want = Session.load(RELEASE, backend="onnxruntime-cpu").run_elements(x, offsets)
    specs = {t.name: t for t in card.outputs}
    assert sorted(got) == sorted(want) == sorted(specs)
    for name, value in want.items():
        assert got[name].shape == value.shape == (int(offsets[-1]), *specs[name].shape[2:])
        np.testing.assert_allclose(got[name], value, atol=card.tolerance.atol, rtol=card.tolerance.rtol, err_msg=name)
    # the comparison can fail: a value moved by twice the tolerance is caught
    moved = got["regression"].copy()
    moved[5, 2] += 2 * (card.tolerance.atol + card.tolerance.rtol * abs(moved[5, 2]))
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(moved, want["regression"], atol=card.tolerance.atol, rtol=card.tolerance.rtol)


def test_consumer_error_is_one_line(consumer, seeded_input, tmp_path):
    """A tampered release through the installed library: one line on stderr naming the file, exit code 1."""
    path, _, offsets = seeded_input
    copy = Path(shutil.copytree(RELEASE, tmp_path / "release"))
    data = bytearray((copy / "model.onnx").read_bytes())
    data[100] ^= 0x01
    (copy / "model.onnx").write_bytes(bytes(data))
    proc = subprocess.run([str(consumer), str(copy), str(path), ",".join(map(str, offsets))],
                          capture_output=True, text=True, timeout=300, env=_env())
    assert proc.returncode == 1 and proc.stdout == ""
    assert re.fullmatch(rf"hepzoo_consumer: {re.escape(str(copy / 'card.json'))}: sha256 mismatch: [^\n]*\n", proc.stderr)


def test_pkg_config(prefix, consumer, seeded_input, tmp_path):
    """hepzoo.pc points into the prefix; the consumer compiled by hand with its flags prints what the CMake-built
    one prints."""
    if shutil.which("pkg-config") is None:
        pytest.skip("pkg-config is not installed")
    env = _env(PKG_CONFIG_PATH=str(prefix / "lib" / "pkgconfig"))
    assert _run("pkg-config", "--modversion", "hepzoo", env=env).stdout.strip() == "0.1.0"
    flags = _run("pkg-config", "--cflags", "--libs", "hepzoo", env=env).stdout.split()
    assert flags == [f"-I{prefix / 'include'}", f"-L{prefix / 'lib'}", "-lhepzoo"]
    libdir = _run("pkg-config", "--variable=libdir", "hepzoo", env=env).stdout.strip()
    assert libdir == str(prefix / "lib")
    exe = tmp_path / "hepzoo_consumer_pc"
    source = CONSUMER / "hepzoo_consumer.cpp"
    _run("g++", "-std=c++17", "-O2", source, *flags, f"-Wl,-rpath,{libdir}", "-o", exe, env=env)
    path, _, offsets = seeded_input
    args = (RELEASE, path, ",".join(map(str, offsets)))
    assert _run(exe, *args).stdout == _run(consumer, *args).stdout
