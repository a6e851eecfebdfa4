"""The ``hepzoo`` command line. Each command is a thin wrapper over a library function of one stage."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="hepzoo: trainable fast-simulation and MLPF reconstruction models with a batched inference runtime.",
)


# the extra (pyproject.toml) that installs each optional module a command may import
EXTRA_OF_MODULE = {
    "torch": "train", "onnxscript": "train", "pythia8": "generate", "pyhepmc": "generate", "fastjet": "generate,validate",
    "vector": "generate,validate", "scipy": "validate", "matplotlib": "validate", "mplhep": "validate",
    "hist": "validate", "dask": "dask", "distributed": "dask", "ray": "tune", "optuna": "tune",
    "comet_ml": "bench", "psutil": "bench",
}  # fmt: skip


def _clear_errors(func):
    """Turn expected failures into one readable line on stderr and a non-zero exit code (a missing optional
    dependency names the extra that installs it)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except typer.Exit:  # a command's own exit code (click's Exit is a RuntimeError): not an error to reword
            raise
        except ModuleNotFoundError as error:
            module = (error.name or "").split(".")[0]
            if module not in EXTRA_OF_MODULE:
                raise
            message = f"{module} is not installed; this command needs: pip install 'hepzoo[{EXTRA_OF_MODULE[module]}]'"
            typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=1) from None
        except (FileNotFoundError, ValueError, RuntimeError, OSError) as error:
            typer.secho(f"error: {one_line(error)}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=1) from None

    return wrapper


def one_line(error: BaseException) -> str:
    """An error's message on one line (uproot's and others' multi-line messages are joined with spaces)."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return text or type(error).__name__


@app.command()
@_clear_errors
def generate(
    process: Annotated[str, typer.Argument(help="ttbar | qcd | zll | gun | minbias | hepmc")],
    output: Annotated[Path, typer.Option("--output", "-o", help="ROOT file to write (atomically)")],
    events: Annotated[int, typer.Option("--events", "-n", help="number of events (hepmc: 0 = all)")] = 100,
    seed: Annotated[int, typer.Option(help="run seed; chunk k uses seeds derived from (seed, k)")] = 42,
    pileup: Annotated[float, typer.Option("--pileup", help="mean number of overlaid minimum-bias interactions")] = 0.0,
    workers: Annotated[int, typer.Option("--workers", "-j", help="worker processes (one Pythia each)")] = 1,
    chunk_size: Annotated[int, typer.Option(help="events per chunk (unit of work and of seeding)")] = 100,
    pthat_min: Annotated[float, typer.Option(help="qcd: minimum pT-hat [GeV]")] = 20.0,
    gun_pid: Annotated[int, typer.Option(help="gun: PDG id (both charges generated for charged particles)")] = 211,
    gun_pt: Annotated[tuple[float, float], typer.Option(help="gun: pT range [GeV]")] = (1.0, 100.0),
    gun_eta: Annotated[tuple[float, float], typer.Option(help="gun: eta range")] = (-2.5, 2.5),
    hepmc: Annotated[Optional[Path], typer.Option(help="hepmc: HepMC3/HepMC2 input file")] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Generate events, simulate the detector, run the PF baseline and build MLPF targets into a ROOT file.

    Example: hepzoo generate ttbar -n 1000 --pileup 20 -j 2 -o data/ttbar_pu20.root
    """
    from hepzoo.datasets.generate import GenerationConfig, generate as run_generation
    from hepzoo.datasets.root_writer import terminate_on_signals
    from hepzoo.datasets.sources import SourceSpec

    if process == "hepmc" and hepmc is None:
        raise ValueError("process 'hepmc' needs --hepmc FILE")
    if hepmc is not None and process != "hepmc":
        raise ValueError(f"--hepmc is only used with process 'hepmc', not {process!r}")
    spec = SourceSpec(process, pthat_min=pthat_min, gun_pid=gun_pid, gun_pt=gun_pt, gun_eta=gun_eta)
    config = GenerationConfig(spec, n_events=events, seed=seed, pileup_mu=pileup, chunk_size=chunk_size)
    with terminate_on_signals():  # SIGTERM/SIGHUP: the temporary output is removed, one line, exit 128 + signal
        written = run_generation(config, output, workers=workers, hepmc=hepmc, progress=progress)
    typer.echo(f"wrote {written} events to {output}")


@app.command()
@_clear_errors
def train(
    config: Annotated[Path, typer.Argument(help="training config (YAML), e.g. configs/mlpf-gnnlsh.yaml")],
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="KEY=VALUE override, repeatable")] = None,
) -> None:
    """Train a model from ROOT files (validated config; resumable; torchrun for several processes).

    Example: hepzoo train configs/mlpf-gnnlsh.yaml --set optim.lr=3e-4 --set 'data.train=["data/*.root"]'
    Several processes: torchrun --nproc_per_node=2 -m hepzoo.training.cli configs/mlpf-gnnlsh.yaml
    """
    from hepzoo.training.cli import train_command

    train_command(config, set_ or [])


@app.command()
@_clear_errors
def tune(
    config: Annotated[Path, typer.Argument(help="base training config (YAML), e.g. configs/mlpf-gnnlsh.yaml")],
    space: Annotated[Path, typer.Option(help="search-space file (YAML), e.g. configs/tune/mlpf-gnnlsh.yaml")],
    samples: Annotated[int, typer.Option(help="number of trials")] = 16,
    address: Annotated[Optional[str], typer.Option(help="Ray cluster address (ray://host:10001); default: local")] = None,
    cpus: Annotated[Optional[int], typer.Option(help="CPUs of the local Ray instance (default: all)")] = None,
    cpus_per_trial: Annotated[float, typer.Option(help="CPUs reserved by each trial")] = 1.0,
    gpus_per_trial: Annotated[float, typer.Option(help="GPUs reserved by each trial (>0 trains on cuda)")] = 0.0,
    max_concurrent: Annotated[Optional[int], typer.Option(help="trials running at once (default: as resources allow)")] = None,
    out: Annotated[Path, typer.Option(help="folder for Ray's experiment, trial runs, results and the best config")] = Path("runs/tune"),
    resume: Annotated[bool, typer.Option(help="continue an interrupted search in --out")] = False,
    retrain_best: Annotated[bool, typer.Option(help="train the final model from the best config afterwards")] = False,
    search_seed: Annotated[Optional[int], typer.Option(help="seed of the TPE sampler (default: the config's seed)")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="KEY=VALUE override of the base config")] = None,
) -> None:
    """Hyper-parameter search with Ray Tune (ASHA early stopping, Optuna TPE); each trial is `hepzoo train`.

    Writes OUT/results.csv, OUT/results.md (sorted by the metric) and OUT/best_config.yaml.

    Example: hepzoo tune configs/mlpf-gnnlsh.yaml --space configs/tune/mlpf-gnnlsh.yaml --samples 12 --cpus-per-trial 1 --out runs/tune-gnnlsh
    """
    from hepzoo.training.tune import TuneOptions, retrain_best as retrain, run_search

    opts = TuneOptions(
        samples=samples, out=out, address=address, cpus=cpus, cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial, max_concurrent=max_concurrent, resume=resume, search_seed=search_seed,
        overrides=set_ or [],
    )  # fmt: skip
    result = run_search(config, space, opts)
    metric = result["space"].metric
    best = result["rows"][0]
    typer.echo(f"best trial {best['trial_id']}: {metric} = {best[metric]:.5g} after {best['epochs']} epochs")
    typer.echo(f"results: {result['out'] / 'results.md'}; best config: {result['best_config_path']}")
    if not result["complete"]:
        typer.secho(f"the search was interrupted: continue it with --resume --out {out}", fg=typer.colors.YELLOW, err=True)
        sys.exit(130)  # not typer.Exit: _clear_errors would turn it into "error:" and code 1
    if retrain_best:
        metrics = retrain(result["best_config_path"], result["space"])
        typer.echo(f"retrained best config: validation {metrics['val']}; weights {metrics['best'] or metrics['last']}")
        for key in ("jet_iqr_over_median", "jet_response_median", "jet_matching_efficiency"):
            if key in metrics:
                typer.echo(f"  {key}: {metrics[key]:.4f}")


@app.command()
@_clear_errors
def demo(
    out: Annotated[Path, typer.Option(help="folder for samples, plots and metrics.json")] = Path("demo_out"),
    events: Annotated[int, typer.Option("--events", "-n", help="events per sample")] = 200,
    workers: Annotated[int, typer.Option("--workers", "-j")] = 2,
    seed: Annotated[int, typer.Option()] = 7,
) -> None:
    """Generate a small built-in sample end to end and print its physics metrics.

    Example: hepzoo demo --out demo_out -n 200
    """
    from hepzoo.validation.demo import format_metrics, run_demo

    metrics = run_demo(out, n_events=events, workers=workers, seed=seed)
    typer.echo(format_metrics(metrics))
    typer.echo(f"plots and metrics.json in {out}/")


@app.command()
@_clear_errors
def export(
    name: Annotated[str, typer.Argument(help="release name, e.g. mlpf-gnnlsh")],
    version: Annotated[Optional[str], typer.Option(help="version (default: the highest)")] = None,
    opset: Annotated[Optional[int], typer.Option(help="ONNX opset (default: the model's, else the exporter's)")] = None,
    triton: Annotated[
        Optional[Path], typer.Option(help="write a Triton model repository entry into DIR from the existing export (no re-export)")
    ] = None,
    max_batch_size: Annotated[int, typer.Option(help="--triton: Triton max_batch_size")] = 64,
) -> None:
    """Export a zoo release to model.onnx (dynamo exporter), check ONNX Runtime vs torch parity, write card.json.

    Nothing is written when the parity check fails (the error names the output tensor and the deviation).
    With --triton DIR: no export; DIR/<name>/config.pbtxt and DIR/<name>/<version>/model.onnx are written
    from the release's verified card and model.onnx.

    Example: hepzoo export mlpf-gnnlsh --version 1   |   hepzoo export mlpf-gnnlsh --triton triton_repo/
    """
    from hepzoo.export.onnx_export import export_release
    from hepzoo.export.zoo import find_release

    release = find_release(name, version)
    if triton is not None:
        from hepzoo.export.triton import CONFIG, write_triton_repository

        folder = write_triton_repository(release.path, triton, max_batch_size=max_batch_size)
        typer.echo(f"Triton model repository entry: {folder / CONFIG} and {folder}/{release.version}/model.onnx")
        return
    typer.echo(f"exporting {release.name} {release.version} ({release.path}) ...")
    onnx_path, card = export_release(release, opset=opset)
    tol = card.tolerance
    typer.echo(f"parity, ONNX Runtime CPU vs torch (atol {tol.atol:g}, rtol {tol.rtol:g}):")
    for p in card.parity:
        size = f"batch {p.batch}" + (f", {p.n_elements} elements" if p.n_elements is not None else "")
        typer.echo(f"  {p.output:16s} {size:28s} max |diff| {p.max_abs_diff:.3g}  {'ok' if p.passed else 'FAIL'}")
    typer.echo(f"model: {onnx_path}  (sha256 {card.onnx.sha256[:16]}..., opset {card.onnx.opset})")
    typer.echo(f"card:  {onnx_path.parent / 'card.json'}")


@app.command("run")
@_clear_errors
def run_model(
    name: Annotated[str, typer.Argument(help="zoo name (e.g. mlpf-gnnlsh) or release folder")],
    input_: Annotated[list[str], typer.Option("--input", "-i", help="event files or globs, e.g. 'data/*.root' (repeatable)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="output folder, or a .root file for one input")],
    version: Annotated[Optional[str], typer.Option(help="release version (default: the highest)")] = None,
    backend: Annotated[str, typer.Option(help="auto | onnxruntime-cpu | numba | ...")] = "auto",
    seed: Annotated[Optional[int], typer.Option(help="flash-sim: noise seed (required; written to the output)")] = None,
    step_size: Annotated[int, typer.Option(help="events per chunk")] = 1000,
    threads: Annotated[int, typer.Option(help="intra-op threads of the backend (ONNX Runtime intra-op threads; numba: batch split over threads)")] = 1,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="worker processes, one per input file at a time (each with --threads threads)")] = 1,
    overwrite: Annotated[bool, typer.Option(help="replace outputs made by a different run")] = False,
    delphes: Annotated[bool, typer.Option(help="inputs use the Delphes branch layout (same as --layout delphes)")] = False,
    layout: Annotated[str, typer.Option(help="input layout: native | delphes (Particle/GenJet/Track/Tower) | nanoaod (Events: GenJet_*, GenPart_*)")] = "native",
    dask: Annotated[bool, typer.Option(help="one Dask task per input file (local cluster unless --scheduler)")] = False,
    scheduler: Annotated[Optional[str], typer.Option(help="Dask scheduler address, e.g. tcp://host:8786")] = None,
    workers: Annotated[Optional[int], typer.Option(help="--dask local cluster: worker processes")] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    on_bad_event: Annotated[str, typer.Option(help="an event whose input breaks the value policy (docs/input-checks.md): error (stop, one line) | skip (write it with no objects, list it in the run record)")] = "error",
) -> None:
    """Run a released model over ROOT event files: one output file per input, written atomically; re-runs skip
    completed outputs.

    Example: hepzoo run mlpf-gnnlsh -i 'data/ttbar_*.root' -o out/   |   hepzoo run flashsim-jet -i gen.root -o jets.root --seed 1
    |   two cores: hepzoo run mlpf-gnnlsh -i a.root -i b.root -o out/ --jobs 2   (one file: --threads 2)
    """
    import time

    from hepzoo.datasets.root_writer import terminate_on_signals
    from hepzoo.runtime.runfile import check_on_bad_event, check_run_options

    check_run_options(seed, step_size, names=("--seed", "--step-size"))  # as arguments: before anything is read
    check_on_bad_event(on_bad_event, "--on-bad-event")
    if scheduler is not None and not dask:
        raise ValueError("--scheduler is only used with --dask")
    if jobs < 1 or threads < 1:
        raise ValueError(f"--jobs and --threads must be >= 1, got --jobs {jobs} --threads {threads}")
    if jobs > 1 and dask:
        raise ValueError("--jobs is for local worker processes; with --dask the cluster's workers run the files")
    if delphes and layout not in ("native", "delphes"):
        raise ValueError(f"--delphes contradicts --layout {layout}: give one of them")
    from hepzoo.datasets.layouts import layout_mapping

    mapping = layout_mapping("delphes" if delphes else layout)  # an unknown layout: one line, before anything
    from hepzoo.runtime import Session
    from hepzoo.runtime.runfile import run_files
    from hepzoo.runtime.runfile_dask import run_files_dask
    from hepzoo.runtime.runfile_jobs import run_files_jobs
    with terminate_on_signals():  # SIGTERM/SIGHUP: the temporary output is removed, one line, exit 128 + signal
        session = Session.load(name, version=version, backend=backend, intra_op_threads=threads)
        typer.echo(f"{session.name} {session.version} on backend {session.backend_name}")
        started = time.perf_counter()
        if dask:
            results = run_files_dask(session, input_, output, scheduler=scheduler, n_workers=workers, seed=seed,
                                     step_size=step_size, overwrite=overwrite, mapping=mapping, show_progress=progress,
                                     on_bad_event=on_bad_event)
        elif jobs > 1:
            results = run_files_jobs(session, input_, output, jobs=jobs, threads=threads, seed=seed, step_size=step_size,
                                     overwrite=overwrite, mapping=mapping, show_progress=progress,
                                     on_bad_event=on_bad_event)
        else:
            results = run_files(session, input_, output, seed=seed, step_size=step_size, overwrite=overwrite,
                                mapping=mapping, show_progress=progress, on_bad_event=on_bad_event)
    elapsed = time.perf_counter() - started
    done = [r for r in results if not r.skipped]
    n_events = sum(r.n_events for r in done)
    for r in results:
        state = "skipped (already complete)" if r.skipped else f"{r.n_events} events, {r.n_objects} objects"
        bad = f", {r.n_bad_skipped} bad events written with no objects" if on_bad_event == "skip" else ""
        typer.echo(f"  {r.input} -> {r.output}: {state}{bad}")
    rate = f", {n_events / elapsed:.0f} events/s" if n_events and elapsed > 0 else ""
    typer.echo(f"{len(done)} files run, {len(results) - len(done)} skipped; {n_events} events in {elapsed:.1f} s{rate}")
    if on_bad_event == "skip":
        n_bad = sum(r.n_bad_skipped for r in results)
        typer.echo(f"{n_bad} bad events skipped (written with no objects; entries and reasons in each output's "
                   "hepzoo_run record)")


@app.command()
@_clear_errors
def bench(
    models: Annotated[Optional[list[str]], typer.Argument(help="zoo names (default: every release)")] = None,
    backends: Annotated[
        Optional[list[str]],
        typer.Option("--backends", "-b", help="torch-eager, runtime backends, particleflow; comma-separated or repeated (default: all available)"),
    ] = None,
    out: Annotated[Path, typer.Option(help="results JSON (written atomically); plots go next to it")] = Path("benchmarks/results_runtime.json"),
    markdown: Annotated[Optional[Path], typer.Option(help="write the runtime section of this file, e.g. BENCHMARKS.md")] = None,
    quick: Annotated[bool, typer.Option(help="tiny budgets and fewer sizes: checks that everything runs")] = False,
    threads: Annotated[int, typer.Option(help="threads per implementation (intra-op)")] = 1,
    budget: Annotated[Optional[float], typer.Option(help="seconds of timed calls per point")] = None,
    max_call: Annotated[Optional[float], typer.Option(help="skip points predicted to take longer per call [s]")] = None,
    data: Annotated[Optional[Path], typer.Option(help="ROOT events for the end-to-end run_file vs parts comparison")] = None,
    e2e_model: Annotated[str, typer.Option(help="model of the end-to-end comparison")] = "mlpf-gnnlsh",
    tag: Annotated[Optional[str], typer.Option(help="own BENCHMARKS.md section and plot names, e.g. gpu-h100")] = None,
    elements: Annotated[Optional[str], typer.Option(help="MLPF one-event sizes, comma-separated (default 256 ... 32768)")] = None,
) -> None:
    """Benchmark zoo models on every backend (and jpata/particleflow's MLPF): throughput, latency, memory, FLOPs.

    Example: hepzoo bench --markdown BENCHMARKS.md --data data/bench_ttbar.root   |   hepzoo bench flashsim-jet --quick
    """
    from hepzoo.benchmarks.e2e import end_to_end
    from hepzoo.benchmarks.matrix import parse_elements, run_benchmarks
    from hepzoo.benchmarks.points import BenchSettings
    from hepzoo.benchmarks.report import write_report

    settings = BenchSettings.create(quick=quick, threads=threads, budget_s=budget, max_call_s=max_call)
    sizes = parse_elements(elements)
    e2e = None
    if data is not None:
        e2e = lambda s: end_to_end(data, e2e_model, threads=s.threads, repeats=1 if s.quick else 3)  # noqa: E731
    results = run_benchmarks(models, backends, settings, out=out, elements=sizes, e2e=e2e, log=typer.echo)
    typer.echo(f"results: {out}")
    if markdown is not None:
        plots = write_report(results, markdown, out.parent, tag=tag)
        typer.echo(f"wrote the runtime section of {markdown}; plots: {', '.join(str(p) for p in plots.values())}")


@app.command()
@_clear_errors
def validate(
    name: Annotated[str, typer.Argument(help="zoo name, release folder or card.json")],
    data: Annotated[list[str], typer.Option("--data", help="ROOT files (globs allowed), repeatable")],
    out: Annotated[Optional[Path], typer.Option(help="folder for metrics.json, plots, report.md/html (default: validate_out/NAME)")] = None,
    max_events: Annotated[int, typer.Option(help="events used (0: all)")] = 0,
    seed: Annotated[int, typer.Option(help="flash-sim sampling seed (bootstrap seeds derive from it)")] = 1,
    backend: Annotated[str, typer.Option(help="runtime backend")] = "auto",
    threads: Annotated[int, typer.Option(help="intra-op threads of the runtime backend")] = 1,
    gate: Annotated[bool, typer.Option(help="check the card's thresholds (--no-gate: only measure and report)")] = True,
) -> None:
    """Validate the deployed model (model.onnx through the runtime) on ROOT files and gate it on the card's thresholds.

    MLPF: efficiency, fake rate, particle/jet/MET response next to the rule-based PF. Flash-sim: W1, KS, classifier
    AUC and efficiency vs the full chain, next to the noise floor of the other half of the events.
    Exits 1 and lists what regressed (metric, measured ± unc, threshold) when a metric is worse than its threshold.

    Example: hepzoo validate mlpf-gnnlsh --data 'data/test*.root' --max-events 300 --out validate_out/mlpf-gnnlsh
    """
    from hepzoo.validation.gate import format_checks
    from hepzoo.validation.run import validate as run_validation

    out = out if out is not None else Path("validate_out") / Path(name).name
    result = run_validation(name, data, out, max_events=max_events, seed=seed, backend=backend, threads=threads,
                            require_thresholds=gate, gate=gate)  # fmt: skip
    typer.echo(format_checks(result.checks) if result.checks else "no gate: metrics measured and reported only")
    typer.echo(f"report: {out / 'report.html'}  ({out / 'report.md'}, {out / 'metrics.json'})")
    if not result.passed:
        typer.secho(f"GATE FAILED: {len(result.failed)} metric(s) regressed:", fg=typer.colors.RED, err=True)
        typer.secho(format_checks(result.failed), fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1)
    if result.checks:
        typer.secho("gate passed", fg=typer.colors.GREEN)


zoo_app = typer.Typer(no_args_is_help=True, help="Released models under zoo/<name>/<version>/.")
app.add_typer(zoo_app, name="zoo")


@zoo_app.command("set-thresholds")
@_clear_errors
def zoo_set_thresholds(
    name: Annotated[str, typer.Argument(help="zoo name, release folder or card.json")],
    data: Annotated[list[str], typer.Option("--data", help="held-out release test files (globs allowed)")],
    n_sigma: Annotated[float, typer.Option(help="k in the gate rule (see hepzoo.validation.gate)")] = 3.5,
    max_events: Annotated[int, typer.Option(help="events used (0: all)")] = 0,
    seed: Annotated[int, typer.Option(help="flash-sim sampling seed")] = 1,
    threads: Annotated[int, typer.Option(help="intra-op threads")] = 1,
    out: Annotated[Optional[Path], typer.Option(help="also write the release measurement's report here")] = None,
) -> None:
    """Measure a release on held-out files and write the gate thresholds into its card.json (model.onnx untouched).

    Example: hepzoo zoo set-thresholds mlpf-gnnlsh --data data/ttbar_test.root
    """
    from hepzoo.validation.run import set_thresholds

    thresholds = set_thresholds(name, data, max_events=max_events, seed=seed, n_sigma=n_sigma, threads=threads, out=out)
    for metric, t in thresholds.metrics.items():
        typer.echo(f"  {metric:44s} {t.reference:.4g} ± {t.uncertainty:.2g}  ({t.better}, n={t.n})")
    typer.echo(f"wrote {len(thresholds.metrics)} thresholds (n_sigma {thresholds.n_sigma}) into the card of {name}")


@zoo_app.command("list")
@_clear_errors
def zoo_list() -> None:
    """List released models and versions, each with the zoo folder it comes from (search path: the folders of
    $HEPZOO_ZOO, os.pathsep-separated, then the zoo installed with hepzoo).

    Example: hepzoo zoo list
    """
    import os

    from hepzoo.export.zoo import list_releases, zoo_roots

    releases = list_releases()
    if not releases:
        typer.echo(f"no releases in {os.pathsep.join(str(f) for f in zoo_roots())}")
    for release in releases:
        cfg = release.config["model"]
        typer.echo(f"{release.name:24s} {release.version:8s} {cfg['name']:24s} {release.zoo}")


@zoo_app.command("show")
@_clear_errors
def zoo_show(
    name: Annotated[str, typer.Argument(help="release name, e.g. mlpf-gnnlsh")],
    version: Annotated[Optional[str], typer.Option(help="version (default: the highest)")] = None,
) -> None:
    """Show a release: model, weights, training, dataset recipe and physics metrics.

    Example: hepzoo zoo show mlpf-gnnlsh
    """
    from hepzoo.export.zoo import describe, find_release

    typer.echo(describe(find_release(name, version)))


@zoo_app.command("release")
@_clear_errors
def zoo_release(
    run_dir: Annotated[Path, typer.Argument(help="training output folder (config.yaml, best.pt)")],
    name: Annotated[str, typer.Argument(help="release name")],
    version: Annotated[str, typer.Argument(help="release version")],
    recipe: Annotated[Path, typer.Option(help="script with the seeded generate/train commands")],
    test: Annotated[list[str], typer.Option(help="held-out ROOT files for the release metrics")],
    noise_floor: Annotated[
        Optional[list[str]], typer.Option(help="flash-sim: an independent full-chain sample (noise floor)")
    ] = None,
    events: Annotated[int, typer.Option(help="test events used (0: all)")] = 0,
    seed: Annotated[int, typer.Option(help="flash-sim: seed of the sampling noise")] = 1,
    checkpoint: Annotated[str, typer.Option(help="checkpoint of the run to release (best.pt: lowest validation loss)")] = "best.pt",
    working_point: Annotated[
        Optional[Path],
        typer.Option(help="MLPF: JSON of python -m hepzoo.validation.working_point (its class_logit_bias goes into the release config)"),
    ] = None,
    decoding: Annotated[
        Optional[list[str]],
        typer.Option(help="MLPF: NAME=true|false decoding option set in the release config (repeatable), e.g. massless_clusters=true"),
    ] = None,
) -> None:
    """Release a trained model into zoo/NAME/VERSION with its recipe and physics metrics on held-out events.

    MLPF: MLPF next to the rule-based PF. Flash-sim: W1/KS/classifier AUC/efficiency against the full chain,
    next to the full-chain noise floor (needs --noise-floor).

    Example: hepzoo zoo release runs/finetune/mlpf-gnnlsh mlpf-gnnlsh 1 --recipe zoo/mlpf-recipe.sh --test data/ttbar_test.root
    """
    import json

    import yaml

    from hepzoo.datasets.io import expand_paths, read_events
    from hepzoo.export.zoo import create_release, sha256_of
    from hepzoo.models import create_model, get_spec
    from hepzoo.training.checkpoint import load_model_weights

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg = config["model"]
    chosen = None
    wanted = {}
    if decoding:
        from hepzoo.models.mlpf_common import parse_decoding

        wanted = parse_decoding(decoding)
        cfg.setdefault("kwargs", {}).update(wanted)
    if working_point is not None:
        chosen = json.loads(working_point.read_text())
        if "class_logit_bias" not in chosen or "events" not in chosen:
            raise ValueError(f"{working_point}: not a working-point JSON (python -m hepzoo.validation.working_point --json)")
        if chosen.get("decoding", {}) != wanted:
            raise ValueError(f"{working_point}: chosen with decoding {chosen.get('decoding', {})}, the release has {wanted}")
        cfg.setdefault("kwargs", {})["class_logit_bias"] = [float(b) for b in chosen["class_logit_bias"]]
    model = create_model(cfg["name"], **cfg.get("kwargs", {}))
    model.load_state_dict(load_model_weights(run_dir / checkpoint))
    test_files = expand_paths(test)
    data = read_events(test_files)
    data = data[:events] if events else data
    hooks = get_spec(cfg["name"]).family.validation  # MLPF: next to the PF baseline; flash-sim: vs the full chain
    metrics = hooks.release_metrics(model, config, data, noise_floor=noise_floor, max_events=events, seed=seed)
    metrics["test_files"] = {str(p): sha256_of(p) for p in test_files}
    commands = [line.strip() for line in recipe.read_text().splitlines() if "generate" in line or " train " in line]
    dataset = {"recipe": str(recipe), "commands": commands}
    if wanted:
        dataset["decoding"] = wanted
    if chosen is not None:
        calib = [Path(per["events"]["file"]) for per in chosen.get("samples", [])] or [Path(chosen["events"]["file"])]
        dataset["working_point"] = {
            "class_logit_bias": cfg["kwargs"]["class_logit_bias"],
            "calibration_file": str(calib[0]),
            "calibration_sha256": sha256_of(calib[0]) if calib[0].is_file() else None,
            "calibration_events": chosen["events"]["n"],
            "calibration_files": {str(c): sha256_of(c) if c.is_file() else None for c in calib},
            "chosen_by": "python -m hepzoo.validation.working_point",
        }
    release = create_release(
        run_dir, name, version, dataset, metrics, checkpoint=checkpoint, config=config if chosen is not None or wanted else None
    )
    typer.echo(hooks.format_release(metrics))
    typer.echo(f"released {release.path}")


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="hepzoo")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
