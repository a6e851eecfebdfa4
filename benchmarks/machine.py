"""The machine a ``hepzoo bench`` run measured on: CPU, memory, GPUs, library versions and the FP32 peak.

Peak = ``cores x frequency x FP32 FLOPs per cycle``, the last from the CPU's vendor, family and flags
(:func:`fp32_flops_per_cycle`; :func:`machine_info` records the reasoning). This nominal peak is recorded next
to the measured GEMM peak of :mod:`hepzoo.benchmarks.peak`, which is what the % peak columns divide by.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import uuid
from pathlib import Path
from typing import Any

__all__ = ["fp32_flops_per_cycle", "gpu_info", "library_versions", "machine_info"]


def _cpuinfo() -> dict[str, str]:
    """The first processor block of /proc/cpuinfo (empty off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    info: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            info[k.strip()] = v.strip()
    return info


def fp32_flops_per_cycle(vendor: str, family: int | None, model: int | None, flags: set[str]) -> tuple[int, str]:
    """Peak FP32 FLOPs per cycle per core (FMA = 2 FLOPs) and the reasoning, from vendor, family and flags."""
    fma = "fma" in flags
    if "AMD" in vendor and family is not None:
        if family == 0x17 and (model or 0) < 0x30 and "avx2" in flags:
            return 16, "AMD Zen 1 (family 0x17, model < 0x30): 2 x 128-bit FMA pipes"
        if family == 0x1A and "avx512f" in flags:
            return 64, "AMD Zen 5 (family 0x1a) with AVX-512: 2 x 512-bit FMA pipes (some mobile parts: 256-bit)"
        if family in (0x17, 0x19, 0x1A) and "avx2" in flags and fma:
            suffix = ", AVX-512 executed as 2 x 256-bit" if "avx512f" in flags else ""
            return 32, f"AMD Zen 2-4 (family {family:#x}): 2 x 256-bit FMA pipes{suffix}"
    if "avx512f" in flags and fma:
        return 64, "AVX-512 with FMA: assumes 2 x 512-bit FMA units (Xeon Gold/Platinum; parts with one unit: 32)"
    if "avx2" in flags and fma:
        return 32, "AVX2 with FMA: 2 x 256-bit FMA units"
    if "avx" in flags:
        return 16, "AVX without FMA: one 256-bit multiply + one 256-bit add per cycle"
    return 8, "SSE: one 128-bit multiply + one 128-bit add per cycle"


def _cgroup_cpus() -> float | None:
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _meminfo_gb(field: str) -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, frequency and the estimated FP32 peak (with how it was estimated)."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    vendor = info.get("vendor_id", platform.processor() or platform.machine())
    family = int(info["cpu family"]) if info.get("cpu family", "").isdigit() else None
    model = int(info["model"]) if info.get("model", "").isdigit() else None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_cpus()
    cores = min(usable, quota) if quota else usable
    freq_ghz, freq_source = None, None
    max_freq = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if max_freq.exists():
        freq_ghz, freq_source = int(max_freq.read_text()) / 1e6, str(max_freq) + " (maximum, boost included)"
    elif info.get("cpu MHz"):
        freq_ghz = float(info["cpu MHz"]) / 1e3
        freq_source = "/proc/cpuinfo 'cpu MHz' (no cpufreq: under a hypervisor this is the nominal clock; boost unseen)"
    per_cycle, why = fp32_flops_per_cycle(vendor, family, model, flags)
    simd = [f for f in ("avx512f", "avx2", "fma", "avx", "sse4_2") if f in flags]
    per_core = freq_ghz * per_cycle if freq_ghz else None
    return {
        "cpu": info.get("model name", platform.processor() or platform.machine()),
        "vendor": vendor,
        "cpu_family": family,
        "cpu_model": model,
        "simd_flags": simd,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": cores,
        "ram_gb": _meminfo_gb("MemTotal"),
        "ram_available_gb": _meminfo_gb("MemAvailable"),
        "freq_ghz": freq_ghz,
        "freq_source": freq_source,
        "fp32_flops_per_cycle": per_cycle,
        "flops_per_cycle_reason": why,
        "peak_gflops_per_core": per_core,
        "peak_gflops": per_core * cores if per_core else None,
        "peak_method": "usable cores x frequency x FP32 FLOPs per cycle per core",
        "gpus": gpu_info(),
        "os": f"{platform.system()} {platform.release()}",
        "hostname_hash": uuid.uuid5(uuid.NAMESPACE_DNS, platform.node()).hex[:8],
    }


def gpu_info() -> list[str]:
    """Names and memory of the NVIDIA GPUs nvidia-smi sees (empty without one): GPU rows are labelled with it."""
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def library_versions() -> dict[str, str | None]:
    """Versions of Python and of every library the benchmark touches (None: not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("hepzoo", "torch", "onnxruntime", "onnxruntime-gpu", "onnx", "numpy", "numba", "scipy", "particleflow"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out
