"""Hyper-parameter search for hepzoo training: Ray Tune with the ASHA scheduler and the Optuna (TPE) searcher.

Each trial is the normal training loop (:func:`hepzoo.training.loop.train`) on the base config with the
trial's values applied as ``--set``-style overrides. After every epoch the trial reports through
``ray.tune.report``: ``val_loss`` (the validation ``total``), every validation component as ``val_<name>``
(flash-sim: ``val_nll``, ``val_eff``), for MLPF models the jet figures of
:func:`hepzoo.validation.mlpf.physics_metrics` (the family's ``training_metrics``) on the first ``physics_events`` validation events
(``jet_iqr_over_median``, ``jet_response_median``, ``jet_matching_efficiency``), the trial's ``seed``, and the
epoch's training checkpoint as a Ray checkpoint. ASHA stops poor trials at its rungs; TPE proposes new values.

Search-space file (YAML, validated by :class:`SearchSpace`; unknown keys are errors)::

    metric: jet_iqr_over_median   # any reported metric (default val_loss)
    mode: min                     # min | max
    max_epochs: 8                 # epochs of every trial and of the best config (default: optim.epochs)
    grace_period: 1               # ASHA: epochs before a trial can be stopped
    reduction_factor: 3           # ASHA: keep the best 1/reduction_factor at each rung
    physics_events: 200           # MLPF: validation events for the jet figures (0: none)
    evaluate_default: true        # the base config's values are the first trial when inside the space
    params:                       # dotted training-config key -> one distribution
      optim.lr: {loguniform: [1.0e-4, 3.0e-3]}
      optim.weight_decay: {uniform: [0.0, 0.1]}
      model.kwargs.width: {choice: [32, 64, 96]}
      model.kwargs.num_layers: {randint: [2, 4]}    # both ends included

Outputs under ``out`` (written atomically): ``search/`` (Ray's experiment: trial results, checkpoints, searcher
and scheduler state; ``--resume`` continues it), ``trials/<trial_id>/`` (each trial's training run),
``results.csv`` and ``results.md`` (one row per trial, sorted by the metric), ``best_config.yaml`` (a complete
training config that ``hepzoo train`` accepts) and ``ray_tmp/`` (Ray's session files, local runs).
Seeds: every trial trains with the base config's ``seed`` unless ``seed`` is itself searched (the table
records it); the TPE sampler is seeded with ``search_seed``.
"""

from __future__ import annotations

import csv
import io as _io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hepzoo.datasets.atomic import write_text_atomic
from hepzoo.training.config import TrainConfig, apply_overrides, config_to_dict, load_config, read_yaml

__all__ = [
    "SearchSpace",
    "TuneOptions",
    "load_space",
    "trial_config",
    "run_search",
    "results_rows",
]

EXPERIMENT = "search"
RESULTS_CSV = "results.csv"
RESULTS_MD = "results.md"
BEST_CONFIG = "best_config.yaml"
_CKPT_FILE = "last.pt"
_MAX_TEMP_LEN = 36  # + Ray's "/session_<date>_<time>_<us>_<pid>/sockets/plasma_store" stays below 107 bytes
_Scalar = bool | int | float | str | None


# ---- search-space file ------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Uniform(_Strict):
    uniform: tuple[float, float]


class LogUniform(_Strict):
    loguniform: tuple[float, float]


class Choice(_Strict):
    choice: list[_Scalar] = Field(min_length=1)


class RandInt(_Strict):
    randint: tuple[int, int]


Distribution = Uniform | LogUniform | Choice | RandInt


class SearchSpace(_Strict):
    """A search-space file: distributions per dotted config key plus the scheduler/metric settings."""

    params: dict[str, Distribution] = Field(min_length=1)
    metric: str = Field("val_loss", description="reported metric to optimise (see the module docstring)")
    mode: Literal["min", "max"] = "min"
    max_epochs: int | None = Field(None, gt=0, description="epochs per trial; null = the config's optim.epochs")
    grace_period: int = Field(1, gt=0, description="ASHA: epochs a trial runs before it can be stopped")
    reduction_factor: float = Field(3.0, gt=1, description="ASHA: 1/reduction_factor of trials go on at a rung")
    physics_events: int = Field(200, ge=0, description="MLPF: validation events for the jet figures (0: none)")
    evaluate_default: bool = Field(True, description="start with the base config's values when inside the space")

    @field_validator("params")
    @classmethod
    def _check_params(cls, params: dict[str, Distribution]) -> dict[str, Distribution]:
        for key, dist in params.items():
            if not key or any(not p for p in key.split(".")):
                raise ValueError(f"{key!r}: expected a dotted training-config key such as optim.lr")
            if isinstance(dist, (Uniform, LogUniform, RandInt)):
                lo, hi = next(iter(dist.model_dump().values()))
                if not lo < hi:
                    raise ValueError(f"{key}: the lower bound {lo} must be below the upper bound {hi}")
                if isinstance(dist, LogUniform) and lo <= 0:
                    raise ValueError(f"{key}: loguniform needs positive bounds, got {lo}")
            elif len(set(map(repr, dist.choice))) != len(dist.choice):
                raise ValueError(f"{key}: choice has repeated values {dist.choice}")
        return params

    @model_validator(mode="after")
    def _check(self) -> SearchSpace:
        if self.max_epochs is not None and self.grace_period > self.max_epochs:
            raise ValueError(f"grace_period {self.grace_period} is larger than max_epochs {self.max_epochs}")
        weights = [k for k in self.params if k.startswith("loss.")]
        if self.metric == "val_loss" and weights:
            raise ValueError(
                f"searching {', '.join(weights)} changes what val_loss measures, so trials are not comparable: "
                "optimise a figure the loss settings do not define (e.g. jet_iqr_over_median, val_nll)"
            )
        return self

    def ray_space(self) -> dict[str, Any]:
        """The Ray Tune param space (OptunaSearch converts it to Optuna distributions)."""
        from ray import tune

        out: dict[str, Any] = {}
        for key, d in self.params.items():
            if isinstance(d, Uniform):
                out[key] = tune.uniform(*d.uniform)
            elif isinstance(d, LogUniform):
                out[key] = tune.loguniform(*d.loguniform)
            elif isinstance(d, RandInt):
                out[key] = tune.randint(d.randint[0], d.randint[1] + 1)  # Ray's upper bound is exclusive
            else:
                out[key] = tune.choice(list(d.choice))
        return out

    def contains(self, key: str, value: Any) -> bool:
        d = self.params[key]
        if isinstance(d, Choice):
            return any(type(value) is type(c) and value == c for c in d.choice)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if isinstance(d, RandInt):
            return isinstance(value, int) and d.randint[0] <= value <= d.randint[1]
        lo, hi = d.uniform if isinstance(d, Uniform) else d.loguniform
        return lo <= value <= hi


def _format_error(err: ValidationError, origin: str) -> str:
    lines = [f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in err.errors()]
    return f"{origin}: invalid search space:\n  " + "\n  ".join(lines)


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space YAML file; errors name the file and the key at fault."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"search-space file {str(p)!r} does not exist")
    raw = read_yaml(p)
    if not isinstance(raw, dict):
        raise ValueError(f"{p}: the top level must be a mapping (params, metric, mode, ...)")
    try:
        return SearchSpace.model_validate(raw)
    except ValidationError as err:
        raise ValueError(_format_error(err, str(p))) from None


# ---- configs ------------------------------------------------------------------------------------------------


def _get_dotted(raw: dict[str, Any], key: str) -> tuple[bool, Any]:
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _overrides(params: dict[str, Any]) -> list[str]:
    return [f"{k}={json.dumps(v)}" for k, v in params.items()]  # JSON is YAML: parsed back exactly


def trial_config(base: dict[str, Any], params: dict[str, Any], origin: str = "config") -> TrainConfig:
    """The validated training config of one trial: ``base`` (a raw config dict) with ``params`` applied."""
    try:
        return load_config(raw=apply_overrides(base, _overrides(params)))
    except ValueError as err:
        raise ValueError(f"{origin} with {', '.join(_overrides(params))}: {err}") from None


def _absolute(base: dict[str, Any]) -> dict[str, Any]:
    """Paths in the config made absolute: trials run in other working folders (and on other nodes)."""
    out = yaml.safe_load(yaml.safe_dump(base))
    data = out.get("data") or {}
    for key in ("train", "val"):
        if key in data and data[key] is not None:
            items = [data[key]] if isinstance(data[key], str) else data[key]
            data[key] = [os.path.abspath(os.path.expanduser(str(p))) for p in items]
    model = out.get("model") or {}
    if model.get("init_weights"):
        model["init_weights"] = os.path.abspath(str(model["init_weights"]))
    return out


def _check_space_against(space: SearchSpace, base: dict[str, Any], origin: str) -> None:
    """Every searched key must name a config field and every end value must give a valid config (model
    keywords are checked by building the model): a typo fails here, not in every trial."""
    from hepzoo.training.loop import build_model

    for key, d in space.params.items():
        values = d.choice if isinstance(d, Choice) else list(next(iter(d.model_dump().values())))
        for v in values:
            cfg = trial_config(base, {key: v}, origin)
            if key.startswith("model."):
                try:
                    build_model(cfg.model)
                except ValueError as err:
                    raise ValueError(f"{origin} with {key}={v!r}: {err}") from None


def _default_point(space: SearchSpace, cfg: TrainConfig, base: dict[str, Any]) -> dict[str, Any] | None:
    """The base config's values of the searched keys, when every one lies inside the space."""
    dumped = config_to_dict(cfg)
    point = {}
    for key in space.params:
        found, value = _get_dotted(base, key)
        if not found:
            found, value = _get_dotted(dumped, key)
        if not found or not space.contains(key, value):
            return None
        point[key] = value
    return point


# ---- physics figure -----------------------------------------------------------------------------------------


def read_first_events(paths: Sequence[str], n: int) -> Any:
    """The first ``n`` events of the files (globs expanded, order kept), read range by range."""
    import awkward as ak

    from hepzoo.datasets import io

    parts, left = [], n
    for path in io.expand_paths(list(paths)):
        if left <= 0:
            break
        stop = min(left, io.num_entries(path))
        parts.append(io.read_range(path, 0, stop))
        left -= stop
    if not parts:
        raise ValueError(f"no validation events in {list(paths)}")
    return ak.concatenate(parts) if len(parts) > 1 else parts[0]


# ---- one trial ----------------------------------------------------------------------------------------------


def hepzoo_trial(params: dict[str, Any], *, base: dict[str, Any], settings: dict[str, Any]) -> None:
    """Ray Tune function trainable: train one config, report after every epoch, resume from Ray's checkpoint."""
    import torch
    from ray import tune

    from hepzoo.training.loop import build_model, seed_everything, train
    from hepzoo.training.tasks import resolve_family

    ctx = tune.get_context()
    trial_id = ctx.get_trial_id()
    out_dir = Path(settings["out"]) / "trials" / trial_id
    raw = apply_overrides(base, _overrides(params))
    raw.update(output_dir=str(out_dir), progress=False, resume=None)
    raw.setdefault("optim", {})["epochs"] = settings["epochs"]
    if settings["gpus_per_trial"] > 0:
        raw["device"] = "cuda"
    restored = tune.get_checkpoint()
    if restored is not None:  # a restored trial: continue exactly from its last reported epoch
        out_dir.mkdir(parents=True, exist_ok=True)
        with restored.as_directory() as d:
            shutil.copyfile(Path(d) / _CKPT_FILE, out_dir / "restored.pt")
        raw["resume"] = str(out_dir / "restored.pt")
    cfg = load_config(raw=raw)
    torch.set_num_threads(max(1, int(settings["cpus_per_trial"])))

    seed_everything(cfg.seed)  # the same initial weights as `hepzoo train` (the trainer seeds, then builds)
    net = build_model(cfg.model)
    events = None
    figures = resolve_family(cfg.model).training_metrics  # the family's physics figures (MLPF: jets), or None
    if settings["physics_events"] > 0 and cfg.data.val and figures is not None:
        events = read_first_events(cfg.data.val, settings["physics_events"])

    def on_epoch_end(epoch: int, summary: dict[str, Any]) -> None:
        val = summary["val"] or {}
        metrics: dict[str, Any] = {"epoch": epoch + 1, "step": summary["step"], "seed": cfg.seed}
        if val:
            metrics["val_loss"] = val["total"]
            metrics.update({f"val_{k}": v for k, v in val.items() if k != "total"})
        if events is not None:
            metrics.update(figures(net, events, cfg.data.buckets, cfg.data.batch_size))
        with tempfile.TemporaryDirectory(prefix="ckpt-", dir=out_dir) as d:
            os.link(summary["last"], Path(d) / _CKPT_FILE)  # Ray copies the folder into its storage
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    train(cfg, model=net, on_epoch_end=on_epoch_end)


# ---- the search ---------------------------------------------------------------------------------------------


class TuneOptions(BaseModel):
    """Command-line options of ``hepzoo tune`` (see :func:`run_search`)."""

    model_config = ConfigDict(extra="forbid")

    samples: int = Field(gt=0, description="number of trials")
    out: Path = Path("runs/tune")
    address: str | None = Field(None, description="Ray cluster address (ray://host:10001, auto); None = local")
    cpus: int | None = Field(None, gt=0, description="CPUs of the local Ray instance; None = all")
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    max_concurrent: int | None = Field(None, gt=0, description="trials running at once; None = as resources allow")
    resume: bool = Field(False, description="continue the experiment under out/search")
    search_seed: int | None = Field(None, description="seed of the TPE sampler; None = the config's seed")
    overrides: list[str] = Field(default_factory=list, description="--set KEY=VALUE on the base config")
    verbose: int = Field(1, ge=0, le=2, description="Ray Tune's console output level")


def _ray_init(opts: TuneOptions, out: Path) -> tuple[bool, Path | None]:
    """Start (or join) Ray: (whether this call started it, a temporary folder to remove after shutdown).
    Local session files go under ``out/ray_tmp``."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage-stats prompt or upload
    if ray.is_initialized():
        return False, None
    if opts.address:
        ray.init(address=opts.address, log_to_driver=opts.verbose > 1)
        return True, None
    cleanup = None
    temp = out / "ray_tmp"
    if len(str(temp)) > _MAX_TEMP_LEN:  # unix socket paths in Ray's session folder are limited to 107 bytes
        temp = cleanup = Path(tempfile.mkdtemp(prefix="hz-ray-"))
        print(f"Ray session files in {temp} (removed at the end): {out / 'ray_tmp'} is too long a path for sockets")
    temp.mkdir(parents=True, exist_ok=True)
    ray.init(
        num_cpus=opts.cpus or os.cpu_count() or 1,
        num_gpus=None if opts.gpus_per_trial > 0 else 0,
        include_dashboard=False,
        _temp_dir=str(temp),
        log_to_driver=opts.verbose > 1,
        configure_logging=False,
    )
    return True, cleanup


def _rank_value(value: Any, mode: str) -> float:
    v = float(value) if value is not None else math.nan
    if math.isnan(v):
        return math.inf
    return v if mode == "min" else -v


def trial_statuses(exp_path: Path) -> dict[str, str]:
    """Ray's status of every trial of an experiment (TERMINATED, ERROR, PENDING, ...), by trial id."""
    from ray.tune import ExperimentAnalysis

    return {t.trial_id: t.status for t in ExperimentAnalysis(str(exp_path)).trials}


def results_rows(result_grid: Any, space: SearchSpace, statuses: dict[str, str]) -> list[dict[str, Any]]:
    """One row per started trial: id, status (completed, stopped by ASHA, error, interrupted), epochs, seed,
    the searched values, the metric at the last and at the best epoch, and the last epoch's other metrics;
    sorted by the last value of the metric (best first)."""
    metric, mode = space.metric, space.mode
    rows = []
    for res in result_grid:
        if res.config is None or not res.metrics:  # never started (an interrupted search)
            continue
        hist = res.metrics_dataframe
        last = res.metrics or {}
        epochs = int(last.get("training_iteration", 0) or 0)
        series = [] if hist is None or metric not in getattr(hist, "columns", []) else list(hist[metric])
        best = min(series, key=lambda v: _rank_value(v, mode)) if series else math.nan
        trial_id = last.get("trial_id") or Path(res.path).name
        ray_status = statuses.get(trial_id, "ERROR" if res.error else "PENDING")
        if ray_status == "ERROR":
            status = "error"
        elif ray_status != "TERMINATED":
            status = "interrupted"
        else:
            status = "completed" if epochs >= (space.max_epochs or 0) else "stopped"
        row: dict[str, Any] = {
            "trial_id": trial_id,
            "status": status,
            "epochs": epochs,
            "seed": last.get("seed"),
        }
        row.update({k: res.config.get(k) for k in space.params})
        row[metric] = last.get(metric, math.nan)
        row[f"best_{metric}"] = best
        for k in ("val_loss", "jet_iqr_over_median", "jet_response_median", "jet_matching_efficiency", "val_nll"):
            if k != metric and k in last:
                row[k] = last[k]
        rows.append(row)
    rows.sort(key=lambda r: (_rank_value(r[metric], mode), r["trial_id"]))
    return rows


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.5g}"
    return "" if v is None else str(v)


def write_results(rows: list[dict[str, Any]], out: Path) -> None:
    """``results.csv`` and ``results.md`` (atomically), columns in the order of the first row."""
    columns: list[str] = []
    for r in rows:
        columns += [c for c in r if c not in columns]
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: r.get(c, "") for c in columns})
    write_text_atomic(out / RESULTS_CSV, buf.getvalue())
    md = ["| rank | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for i, r in enumerate(rows, 1):
        md.append(f"| {i} | " + " | ".join(_fmt(r.get(c)) for c in columns) + " |")
    write_text_atomic(out / RESULTS_MD, "\n".join(md) + "\n")


def best_config(base: dict[str, Any], params: dict[str, Any], epochs: int, out: Path) -> dict[str, Any]:
    """The complete training config of the best trial (validated), training into ``out/best``."""
    raw = apply_overrides(base, _overrides(params))
    raw.setdefault("optim", {})["epochs"] = epochs
    raw.update(output_dir=str(out / "best"), resume=None)
    return config_to_dict(load_config(raw=raw))


def run_search(config_path: str | Path, space_path: str | Path, opts: TuneOptions) -> dict[str, Any]:
    """Run (or resume) the search; write the results table and the best config (also after an interruption,
    from the trials so far). Returns ``{"rows", "best_params", "best_config", "best_config_path", "out",
    "space", "complete"}``; ``complete`` is False when trials are left (continue with ``opts.resume``)."""
    config_path = Path(config_path)
    cfg = load_config(config_path, opts.overrides)  # validates the base config (names the file)
    space = load_space(space_path)
    base = _absolute(apply_overrides(read_yaml(config_path) or {}, opts.overrides))
    origin = str(config_path)
    _check_space_against(space, base, origin)
    epochs = space.max_epochs or cfg.optim.epochs
    space = space.model_copy(update={"max_epochs": epochs})
    out = opts.out.resolve()
    exp_path = out / EXPERIMENT

    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    if exp_path.exists() and not opts.resume:
        raise ValueError(f"{exp_path} holds an earlier search: pass --resume to continue it, or another --out")
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "out": str(out),
        "epochs": epochs,
        "cpus_per_trial": opts.cpus_per_trial,
        "gpus_per_trial": opts.gpus_per_trial,
        "physics_events": space.physics_events,
    }
    trainable = tune.with_resources(
        tune.with_parameters(hepzoo_trial, base=base, settings=settings),
        {"cpu": opts.cpus_per_trial, "gpu": opts.gpus_per_trial},
    )
    started, cleanup = _ray_init(opts, out)
    try:
        if opts.resume and tune.Tuner.can_restore(str(exp_path)):
            tuner = tune.Tuner.restore(str(exp_path), trainable, resume_unfinished=True, resume_errored=True)
        else:
            seed = cfg.seed if opts.search_seed is None else opts.search_seed
            default = _default_point(space, cfg, base) if space.evaluate_default else None
            searcher: Any = OptunaSearch(
                metric=space.metric, mode=space.mode, seed=seed, points_to_evaluate=[default] if default else None
            )
            if opts.max_concurrent:
                searcher = ConcurrencyLimiter(searcher, max_concurrent=opts.max_concurrent)
            scheduler = ASHAScheduler(
                time_attr="training_iteration", metric=space.metric, mode=space.mode, max_t=epochs,
                grace_period=space.grace_period, reduction_factor=space.reduction_factor,
            )  # fmt: skip
            tuner = tune.Tuner(
                trainable,
                param_space=space.ray_space(),
                tune_config=tune.TuneConfig(
                    search_alg=searcher, scheduler=scheduler, num_samples=opts.samples, reuse_actors=True
                ),
                run_config=tune.RunConfig(
                    name=EXPERIMENT,
                    storage_path=str(out),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                    failure_config=tune.FailureConfig(max_failures=0),
                    verbose=opts.verbose,
                ),
            )
        grid = tuner.fit()
    finally:
        if started:
            import ray

            ray.shutdown()
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)

    statuses = trial_statuses(exp_path)
    rows = results_rows(grid, space, statuses)
    if not rows:
        raise RuntimeError(f"{exp_path}: the search produced no trials")
    write_results(rows, out)
    good = [r for r in rows if math.isfinite(_rank_value(r[space.metric], space.mode))]
    if not good:
        errors = [str(r.error) for r in grid if r.error][:3]
        raise RuntimeError(f"{exp_path}: no trial reported {space.metric!r}; first errors: {errors}")
    best_params = {k: good[0][k] for k in space.params}
    best = best_config(base, best_params, epochs, out)
    header = (
        f"# best of hepzoo tune {config_path} --space {space_path} (trial {good[0]['trial_id']}, "
        f"{space.metric} {_fmt(good[0][space.metric])}); train it with: hepzoo train {out / BEST_CONFIG}\n"
    )
    write_text_atomic(out / BEST_CONFIG, header + yaml.safe_dump(best, sort_keys=False))
    finished = sum(1 for s in statuses.values() if s in ("TERMINATED", "ERROR"))
    return {
        "rows": rows, "best_params": best_params, "best_config": best, "best_config_path": out / BEST_CONFIG,
        "out": out, "space": space, "complete": finished >= opts.samples and finished == len(statuses),
    }  # fmt: skip


def retrain_best(best_config_path: str | Path, space: SearchSpace) -> dict[str, Any]:
    """Train the final model from the best config; returns its validation losses (and MLPF jet figures)."""
    from hepzoo.training.loop import train
    from hepzoo.training.tasks import resolve_family

    cfg = load_config(best_config_path)
    result = train(cfg)
    metrics: dict[str, Any] = {"val": result["val"], "best": result["best"], "last": result["last"]}
    figures = resolve_family(cfg.model).training_metrics
    if space.physics_events > 0 and cfg.data.val and figures is not None:
        events = read_first_events(cfg.data.val, space.physics_events)
        metrics.update(figures(result["model"], events, cfg.data.buckets, cfg.data.batch_size))
    return metrics
