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


def _clear_errors(func):
    """Turn expected failures into one readable line on stderr and a non-zero exit code."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (FileNotFoundError, ValueError, RuntimeError, OSError) as error:
            typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=1) from None

    return wrapper


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
    from hepzoo.datasets.sources import SourceSpec

    if process == "hepmc" and hepmc is None:
        raise ValueError("process 'hepmc' needs --hepmc FILE")
    if hepmc is not None and process != "hepmc":
        raise ValueError(f"--hepmc is only used with process 'hepmc', not {process!r}")
    spec = SourceSpec(process, pthat_min=pthat_min, gun_pid=gun_pid, gun_pt=gun_pt, gun_eta=gun_eta)
    config = GenerationConfig(spec, n_events=events, seed=seed, pileup_mu=pileup, chunk_size=chunk_size)
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
) -> None:
    """Export a zoo release to model.onnx (dynamo exporter), check ONNX Runtime vs torch parity, write card.json.

    Nothing is written when the parity check fails (the error names the output tensor and the deviation).

    Example: hepzoo export mlpf-gnnlsh --version 1
    """
    from hepzoo.export.onnx_export import export_release
    from hepzoo.export.zoo import find_release

    release = find_release(name, version)
    typer.echo(f"exporting {release.name} {release.version} ({release.path}) ...")
    onnx_path, card = export_release(release, opset=opset)
    tol = card.tolerance
    typer.echo(f"parity, ONNX Runtime CPU vs torch (atol {tol.atol:g}, rtol {tol.rtol:g}):")
    for p in card.parity:
        size = f"batch {p.batch}" + (f", {p.n_elements} elements" if p.n_elements is not None else "")
        typer.echo(f"  {p.output:16s} {size:28s} max |diff| {p.max_abs_diff:.3g}  {'ok' if p.passed else 'FAIL'}")
    typer.echo(f"model: {onnx_path}  (sha256 {card.onnx.sha256[:16]}..., opset {card.onnx.opset})")
    typer.echo(f"card:  {onnx_path.parent / 'card.json'}")


zoo_app = typer.Typer(no_args_is_help=True, help="Released models under zoo/<name>/<version>/.")
app.add_typer(zoo_app, name="zoo")


@zoo_app.command("list")
@_clear_errors
def zoo_list() -> None:
    """List released models and versions.

    Example: hepzoo zoo list
    """
    from hepzoo.export.zoo import list_releases, zoo_root

    releases = list_releases()
    if not releases:
        typer.echo(f"no releases in {zoo_root()}")
    for release in releases:
        cfg = release.config["model"]
        typer.echo(f"{release.name:24s} {release.version:8s} {cfg['name']}")


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
) -> None:
    """Release a trained model into zoo/NAME/VERSION with its recipe and physics metrics on held-out events.

    MLPF: MLPF next to the rule-based PF. Flash-sim: W1/KS/classifier AUC/efficiency against the full chain,
    next to the full-chain noise floor (needs --noise-floor).

    Example: hepzoo zoo release runs/finetune/mlpf-gnnlsh mlpf-gnnlsh 1 --recipe zoo/mlpf-recipe.sh --test data/ttbar_test.root
    """
    import yaml

    from hepzoo.datasets.io import expand_paths, read_events
    from hepzoo.export.zoo import create_release, sha256_of
    from hepzoo.models import create_model, get_spec
    from hepzoo.training.checkpoint import load_model_weights

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg = config["model"]
    model = create_model(cfg["name"], **cfg.get("kwargs", {}))
    model.load_state_dict(load_model_weights(run_dir / "best.pt"))
    test_files = expand_paths(test)
    data = read_events(test_files)
    data = data[:events] if events else data
    if get_spec(cfg["name"]).family == "flashsim":
        from hepzoo.validation.flashsim import evaluate, format_report

        if not noise_floor:
            raise ValueError("a flash-sim release needs --noise-floor: an independent full-chain sample")
        floor_files = expand_paths(noise_floor)
        floor = read_events(floor_files)
        floor = floor[:events] if events else floor
        metrics = evaluate(model, config["data"]["kind"], data, floor, seed=seed)
        metrics["noise_floor_files"] = {str(p): sha256_of(p) for p in floor_files}
        format_comparison = format_report
    else:
        from hepzoo.validation.mlpf import compare_with_baseline, format_comparison

        metrics = compare_with_baseline(model, data)
    metrics["test_files"] = {str(p): sha256_of(p) for p in test_files}
    commands = [line.strip() for line in recipe.read_text().splitlines() if "generate" in line or " train " in line]
    dataset = {"recipe": str(recipe), "commands": commands}
    release = create_release(run_dir, name, version, dataset, metrics)
    typer.echo(format_comparison(metrics))
    typer.echo(f"released {release.path}")


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="hepzoo")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
