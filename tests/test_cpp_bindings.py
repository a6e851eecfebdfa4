"""C++ bindings (cpp_bindings/): build libhepzoo once with ``make cpp``, then drive its test executable.

Golden files are written here, at test time, by the Python runtime (``Session.run_elements`` for MLPF,
``Session.sample`` for flash-sim, ONNX Runtime CPU backend) on seeded random inputs; the C++ outputs must match
them within the card's tolerance. Every zoo release with a card is tested, so a new model needs no new test code.

Case folder format (read by cpp_bindings/tests/hepzoo_tests.cpp): ``case.json`` + one raw little-endian float32
file (C order, no header) per tensor; ``case.json`` holds ``family``, ``batch_size``, ``size_buckets`` (empty: the
card's), ``offsets`` (MLPF) and ``inputs``/``outputs`` as ``{name: {"file": ..., "shape": [...]}}``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from hepzoo.export.card import CARD, ModelCard, load_card  # noqa: E402
from hepzoo.models.families import get_family  # noqa: E402
from hepzoo.export.zoo import Release, list_releases  # noqa: E402
from hepzoo.runtime import Session  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RELEASES = [r for r in list_releases() if (r.path / CARD).is_file()]
IDS = [f"{r.name}-{r.version}" for r in RELEASES]
FLASHSIM = [r for r in RELEASES if get_family(load_card(r.path, verify_onnx=False).family).generative]

# MLPF cases: (name, element counts per event, size-bucket override or None, events per ONNX Runtime call).
# Non-bucket sizes, a bucket boundary, empty events, batches split in chunks, and events above the largest bucket
# (cheaply, with small override buckets: they run alone, padded to the next multiple of the granularity).
MLPF_CASES = [
    ("card-buckets", [37, 0, 64, 129, 300, 1, 1000, 65], None, 2),
    ("oversize", [200, 5, 130, 128, 0, 64], [64, 128], 2),
]
FLASHSIM_CASES = [("rows-257", 257, 11), ("rows-1", 1, 12), ("rows-0", 0, 13)]  # (name, rows, seed)


def _drive(build: Path, *args: object, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(build / "hepzoo_tests"), *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def _error(proc: subprocess.CompletedProcess) -> str:
    """The hepzoo::Error message the driver caught (exit 3), failing the test otherwise."""
    assert proc.returncode == 3, f"expected a hepzoo::Error (exit 3), got {proc.returncode}: {proc.stdout}{proc.stderr}"
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("ERROR: ")]
    return line.removeprefix("ERROR: ")


# ---- golden inputs -----------------------------------------------------------------------------------------------


def _element_rows(card: ModelCard, counts: list[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Plausible element rows (tracks then clusters), columns found by the card's feature names."""
    from hepzoo.datasets.schema import ElementType

    rng = np.random.default_rng(seed)
    names = card.inputs[0].feature_names
    col = {name: i for i, name in enumerate(names)}
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    n = int(offsets[-1])
    x = np.zeros((n, len(names)), np.float32)
    x[:, col["type"]] = rng.choice([int(t) for t in ElementType], n)
    x[:, col["pt"]] = rng.exponential(3.0, n) + 0.2
    x[:, col["eta"]] = rng.uniform(-3, 3, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    x[:, col["sin_phi"]], x[:, col["cos_phi"]] = np.sin(phi), np.cos(phi)
    x[:, col["e"]] = x[:, col["pt"]] * np.cosh(x[:, col["eta"]])
    track = x[:, col["type"]] == int(ElementType.TRACK)
    x[track, col["charge"]] = rng.choice([-1.0, 1.0], int(track.sum()))
    x[track, col["n_hits"]] = rng.integers(5, 15, int(track.sum()))
    x[track, col["d0"]] = rng.normal(0, 0.05, int(track.sum()))
    x[~track, col["e_ecal"]] = x[~track, col["e"]] * 0.7
    x[~track, col["e_hcal"]] = x[~track, col["e"]] * 0.3
    x[~track, col["n_cells"]] = rng.integers(1, 20, int((~track).sum()))
    return x, offsets


def _context_rows(card: ModelCard, n: int, seed: int) -> np.ndarray:
    """Generator-level rows by feature name; unknown names get standard-normal values."""
    spec = next(t for t in card.inputs if t.name not in {s.name for s in card.noise_inputs})
    rng = np.random.default_rng(seed)
    phi = rng.uniform(-np.pi, np.pi, n)
    columns = []
    for name in spec.feature_names:
        if name == "log_pt":
            columns.append(rng.uniform(np.log(5.0), np.log(300.0), n))
        elif name == "eta":
            columns.append(rng.uniform(-2.5, 2.5, n))
        elif name in ("sin_phi", "cos_phi"):
            columns.append(np.sin(phi) if name == "sin_phi" else np.cos(phi))
        elif name.startswith(("frac_", "is_")):
            columns.append(rng.uniform(0, 1, n) if name.startswith("frac_") else rng.integers(0, 2, n))
        elif name in ("n_const", "n_pileup", "n_genjets", "mass"):
            columns.append(rng.integers(1, 40, n))
        else:
            columns.append(rng.standard_normal(n))
    return np.stack(columns, axis=1).astype(np.float32) if n else np.zeros((0, len(spec.feature_names)), np.float32)


def _write_case(folder: Path, meta: dict, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True)
    meta = dict(meta, inputs={}, outputs={})
    for group, tensors in (("inputs", inputs), ("outputs", outputs)):
        for name, value in tensors.items():
            file = f"{group}.{name}.f32"
            (folder / file).write_bytes(np.ascontiguousarray(value, dtype="<f4").tobytes())
            meta[group][name] = {"file": file, "shape": list(value.shape)}
    (folder / "case.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture(scope="module", params=RELEASES, ids=IDS)
def golden(request, tmp_path_factory) -> tuple[Release, list[Path]]:
    """Case folders for one release, written by the Python runtime on the ONNX Runtime CPU backend."""
    release: Release = request.param
    root = tmp_path_factory.mktemp(f"golden-{release.name}")
    session = Session.load(release.path, backend="onnxruntime-cpu")
    card = session.card
    cases = []
    if get_family(card.family).elements:
        for seed, (name, counts, buckets, batch_size) in enumerate(MLPF_CASES):
            x, offsets = _element_rows(card, counts, seed)
            out = session.run_elements(x, offsets, batch_size=batch_size, buckets=buckets)
            meta = {"family": "mlpf", "batch_size": batch_size, "size_buckets": buckets or [], "offsets": offsets.tolist()}
            cases.append(_write_case(root / name, meta, {card.inputs[0].name: x}, out))
    else:
        context_name = next(t.name for t in card.inputs if t.name not in {s.name for s in card.noise_inputs})
        for name, n, seed in FLASHSIM_CASES:
            context = _context_rows(card, n, seed)
            result = session.sample(context, seed)
            # the noise Session.sample drew (its documented order: one standard_normal draw per noise input)
            rng = np.random.default_rng(seed)
            noise = {s.name: rng.standard_normal((n, *s.shape[1:]), dtype=np.float32) for s in card.noise_inputs}
            out = {t.name: result[t.name] for t in card.outputs}
            if n:  # the reconstructed noise is the one sample() used
                again = session.backend.run({context_name: context, **noise})
                for key, value in out.items():
                    np.testing.assert_array_equal(again[key], value)
            meta = {"family": "flashsim", "batch_size": 32, "size_buckets": []}
            cases.append(_write_case(root / name, meta, {context_name: context, **noise}, out))
    return release, cases


# ---- tests -------------------------------------------------------------------------------------------------------


def test_sha256_matches_hashlib_and_vectors(cpp_build, tmp_path):
    proc = _drive(cpp_build, "sha256-vectors")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = {"empty": b"", "abc": b"abc", "random": np.random.default_rng(5).bytes(3 * 2**20 + 17)}
    paths = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    paths += [r.path / "model.onnx" for r in RELEASES]
    proc = _drive(cpp_build, "sha256", *paths)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = dict(line.split("  ", 1)[::-1] for line in proc.stdout.splitlines())
    assert got == {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def test_parity_with_python_runtime(cpp_build, golden):
    release, cases = golden
    for case in cases:
        proc = _drive(cpp_build, "parity", release.path, case)
        assert proc.returncode == 0, f"{release.name} {case.name}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        assert f"PARITY OK {release.name}/{case.name}" in proc.stdout
        checks = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
        outputs = {t.name for t in load_card(release.path).outputs}
        compared = {re.search(r"'(\w+)'$", c["check"]).group(1) for c in checks if " run" in c["check"]}
        assert compared == outputs, f"{case.name}: compared {compared}, card outputs {outputs}"


def test_parity_check_fails_on_a_wrong_value(cpp_build, golden, tmp_path):
    """The comparison can fail: one golden value moved by twice the card's tolerance is reported."""
    release, cases = golden
    case = Path(shutil.copytree(cases[0], tmp_path / "case"))
    meta = json.loads((case / "case.json").read_text())
    name, spec = sorted(meta["outputs"].items())[-1]
    values = np.fromfile(case / spec["file"], dtype="<f4")
    tol = load_card(release.path, verify_onnx=False).tolerance
    i = values.size // 2
    values[i] += 2 * (tol.atol + tol.rtol * abs(values[i]))
    values.tofile(case / spec["file"])
    proc = _drive(cpp_build, "parity", release.path, case)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"runElements '{name}': value {i} is" in proc.stdout or f"run '{name}': value {i} is" in proc.stdout


@pytest.mark.parametrize("golden", FLASHSIM, ids=[f"{r.name}-{r.version}" for r in FLASHSIM], indirect=True)
def test_flashsim_seeded_sample(cpp_build, golden):
    """sample(context, seed) in C++ (std::mt19937_64): reproducible per seed, different across seeds, its returned
    noise reproduces the outputs through run(), and the noise is standard normal."""
    release, cases = golden
    reports = []
    for seed in (1, 1, 2):
        proc = _drive(cpp_build, "sample", release.path, cases[0], seed)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        reports.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert reports[0]["outputs_sha256"] == reports[1]["outputs_sha256"] != reports[2]["outputs_sha256"]
    for report in reports:
        for spec in load_card(release.path, verify_onnx=False).noise_inputs:
            stats = report[spec.name]  # >= 257 x 5 draws: mean within 5 sigma of 0, std within 10 %
            assert abs(stats["mean"]) < 5 / np.sqrt(stats["n"]) and abs(stats["std"] - 1) < 0.1, stats


def test_threads_match_serial_bitwise(cpp_build, golden):
    release, cases = golden
    proc = _drive(cpp_build, "threads", release.path, cases[0], 8, 200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {**report, "threads": 8, "calls": 1600, "mismatches": 0}
    assert report["items"] >= 2


@pytest.fixture(params=RELEASES, ids=IDS)
def release(request) -> Release:
    return request.param


def test_wrong_feature_count(cpp_build, release):
    card = load_card(release.path)
    message = _error(_drive(cpp_build, "bad-input", "features", release.path))
    assert message.startswith(f"hepzoo::Session({card.name}): ")
    if get_family(card.family).elements:
        n = card.inputs[0].shape[-1]
        assert f"input '{card.inputs[0].name}' of event 0: expected {n} features per element" in message
        assert message.endswith(f"got {n - 1}")
    else:
        context = next(t for t in card.inputs if t.name not in {s.name for s in card.noise_inputs})
        c = context.shape[-1]
        assert f"input '{context.name}': expected shape [N, {c}]" in message and message.endswith(f"got [4, {c - 1}]")


@pytest.mark.parametrize("kind", ["nan", "inf"])
def test_non_finite_input_names_tensor_event_and_feature(cpp_build, release, kind):
    card = load_card(release.path)
    message = _error(_drive(cpp_build, "bad-input", kind, release.path))
    value = "NaN" if kind == "nan" else "+inf"
    if get_family(card.family).elements:  # event 1, element 3, feature 1
        feature = card.inputs[0].feature_names[1]
        assert f"input '{card.inputs[0].name}' of event 1, element 3, feature '{feature}': {value}" in message
    elif kind == "nan":  # context row 2, column 1
        context = next(t for t in card.inputs if t.name not in {s.name for s in card.noise_inputs})
        assert f"input '{context.name}', row 2, feature '{context.feature_names[1]}': NaN" in message
    else:  # the first noise input, row 2, column 1
        assert f"input '{card.noise_inputs[0].name}', row 2, feature '#1': +inf" in message


def test_empty_event_gives_empty_outputs(cpp_build, release):
    """Not an error: zero rows out, like the Python runtime (its run_elements skips empty events)."""
    card = load_card(release.path)
    proc = _drive(cpp_build, "bad-input", "empty", release.path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout.split("EMPTY ", 1)[1])
    prefix = 2 if get_family(card.family).elements else 1
    empty = {t.name: [0, *t.shape[prefix:]] for t in card.outputs}
    for key, shapes in report.items():
        if key == "run(events)[0]":  # the non-empty neighbour: 3 rows
            assert shapes == {t.name: [3, *t.shape[prefix:]] for t in card.outputs}
        else:
            assert {k: v for k, v in shapes.items() if k in empty} == empty, key
    if get_family(card.family).elements:
        session = Session.load(release.path, backend="onnxruntime-cpu")
        python = session.run_elements(np.zeros((0, card.inputs[0].shape[-1]), np.float32), np.array([0, 0]))
        assert {k: list(v.shape) for k, v in python.items()} == empty


def test_tampered_model_file(cpp_build, release, tmp_path):
    copy = tmp_path / release.name
    shutil.copytree(release.path, copy)
    onnx = copy / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    message = _error(_drive(cpp_build, "bad-input", "load", copy))
    card = load_card(release.path, verify_onnx=False)
    actual = hashlib.sha256(bytes(data)).hexdigest()
    assert message.startswith(f"{copy / CARD}: sha256 mismatch: the card records {card.onnx.sha256} but {onnx} has {actual}")
    # the untouched release loads
    proc = _drive(cpp_build, "bad-input", "load", release.path)
    assert proc.returncode == 0 and f"LOADED {card.name}" in proc.stdout


def test_onnx_path_escaping_the_release_is_refused(cpp_build, release, tmp_path):
    copy = tmp_path / "release"
    shutil.copytree(release.path, copy)
    shutil.move(copy / "model.onnx", tmp_path / "model.onnx")
    card = json.loads((copy / CARD).read_text())
    card["onnx"]["file"] = "../model.onnx"
    (copy / CARD).write_text(json.dumps(card))
    message = _error(_drive(cpp_build, "bad-input", "load", copy))
    assert message == f"{copy / CARD}: onnx.file '../model.onnx' points outside the release folder {copy}"


# Tampered copies of a release: (kind, change to the copy) -> the load error, one line, naming the file at fault.
def _tamper(kind: str, copy: Path) -> str:
    """Changes the release copy at ``copy``; returns the start of the expected error message."""
    card_path, onnx = copy / CARD, copy / "model.onnx"
    card = json.loads(card_path.read_text())
    spec = card["inputs"][0]
    if kind == "json":
        text = card_path.read_text()
        card_path.write_text(text[: len(text) // 2])
        return f"{card_path}: not valid JSON: parse error at line "
    if kind == "field":
        del card["tolerance"]
        card_path.write_text(json.dumps(card))
        return f"{card_path}: field 'tolerance': missing"
    if kind == "newline":  # a string from the card with a newline in it stays on the error's one line
        card["family"] = "mlpf\nv2"
        card_path.write_text(json.dumps(card))
        return f"{card_path}: field 'family': unknown family 'mlpf v2'"
    if kind == "no-model":
        onnx.unlink()
        return f"{onnx}: cannot open the model file: No such file or directory"
    if kind == "sha256":
        data = bytearray(onnx.read_bytes())
        data[len(data) // 3] ^= 0x55
        onnx.write_bytes(bytes(data))
        return f"{card_path}: sha256 mismatch: the card records {card['onnx']['sha256']} but {onnx} has "
    if kind == "not-onnx":  # hashed correctly, but not a model: ONNX Runtime's message, on one line
        onnx.write_bytes(b"not an ONNX model\n\tsecond line\n")
        card["onnx"]["sha256"] = hashlib.sha256(onnx.read_bytes()).hexdigest()
        card_path.write_text(json.dumps(card))
        return f"{onnx}: ONNX Runtime cannot load the model: "
    if kind == "shape":  # the card's feature axis one short of the graph's
        graph = ", ".join("?" if isinstance(d, str) else str(d) for d in spec["shape"])
        spec["shape"][-1] -= 1
        spec["feature_names"] = spec["feature_names"][:-1]
        card_path.write_text(json.dumps(card))
        said = ", ".join(str(d) for d in spec["shape"])
        return f"{onnx}: graph input '{spec['name']}' has shape [{graph}], the card {card_path} says [{said}]"
    if kind == "dtype":
        spec["dtype"] = "bool"
        card_path.write_text(json.dumps(card))
        return f"{onnx}: graph input '{spec['name']}' is float32, the card {card_path} says bool"
    raise AssertionError(kind)


TAMPERED = ["json", "field", "newline", "no-model", "sha256", "not-onnx", "shape", "dtype"]
FAMILIES = [next(r for r in RELEASES if r not in FLASHSIM), *FLASHSIM[:1]]  # one release of each family


@pytest.mark.parametrize("release", FAMILIES, ids=[f"{r.name}-{r.version}" for r in FAMILIES])
@pytest.mark.parametrize("kind", TAMPERED)
def test_tampered_release_is_a_one_line_error_naming_the_file(cpp_build, release, kind, tmp_path):
    copy = Path(shutil.copytree(release.path, tmp_path / "release"))
    expected = _tamper(kind, copy)
    proc = _drive(cpp_build, "bad-input", "load", copy)
    message = _error(proc)
    assert proc.stdout == f"ERROR: {message}\n", proc.stdout  # the whole message is one line
    assert message.startswith(expected), message
    if kind == "not-onnx":
        assert "protobuf" in message.lower() and not message.endswith(" "), message


def test_error_messages_are_flattened_to_one_line(cpp_build):
    proc = _drive(cpp_build, "one-line")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == "one-line: ok\n"


@pytest.mark.parametrize(
    ("kind", "pattern"),
    [
        ("buffer", r"runInto: buffer '\w+' has shape \[5(, \d+)*\], (event 0|6 rows) needs \[6(, \d+)*\]"),
        ("family", r"run\((inputs|event)\) is for (flashsim|mlpf) models; [\w-]+ is a (mlpf|flashsim) model"),
        ("cuda", r"Backend::CUDA requested, but libhepzoo was built without CUDA"),
    ],
    ids=["buffer", "family", "cuda"],
)
def test_misuse_is_a_clear_error(cpp_build, release, kind, pattern):
    message = _error(_drive(cpp_build, "bad-input", kind, release.path))
    assert re.search(pattern, message), message


def test_bad_offsets(cpp_build):
    mlpf = next(r for r in RELEASES if r not in FLASHSIM)
    message = _error(_drive(cpp_build, "bad-input", "offsets", mlpf.path))
    assert message.endswith("offsets must be non-decreasing: offsets[2] = 4 < offsets[1] = 6")


def test_framework_module_example(cpp_build, release):
    proc = subprocess.run(
        [str(cpp_build / "framework_module"), str(release.path), "--threads", "3", "--events", "8", "--seed", "4"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    card = load_card(release.path, verify_onnx=False)
    head, counts = proc.stdout.strip().splitlines()
    match = re.match(rf"{card.name} v{card.version} \({card.family}\): 3 threads, 24 events, (\d+) (elements|objects) in ", head)
    assert match, head
    total = sum(int(v) for v in re.findall(r"=(\d+)", counts))
    assert total == int(match.group(1))  # every element slot (MLPF) or object (flash-sim) got a prediction


def test_ctest_and_make_cpp_is_idempotent(cpp_build, make_cpp):
    proc = subprocess.run(["ctest", "--test-dir", str(cpp_build), "--output-on-failure"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    library = next(cpp_build.glob("libhepzoo.so.*.*"))
    before = library.stat().st_mtime_ns
    proc = subprocess.run(make_cpp, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "fetch_deps.sh:" not in proc.stdout  # headers are not fetched again
    assert library.stat().st_mtime_ns == before  # nothing rebuilt
