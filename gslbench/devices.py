"""Where torch runs: `--device auto|cpu|cuda|mps`, resolved and described in one place.

The device is how a result is computed, not what it is: like the thread counts it is recorded in
config.json, codes.h5 and metrics.json, and is not part of the run id. Results computed on a GPU
may differ from CPU ones in their last digits (other kernels, other summation orders). faiss (the
quantizers' fit, encode and search) always runs on the CPU. On the CPU too the bits depend on the
kind of CPU (torch's and faiss's kernels pick their code by its instruction set,
docs/guide/grids.md), so config.json also records the CPU and the kernels that ran
(`describe_cpu`).
"""

from __future__ import annotations

import platform
from pathlib import Path

from gslbench.errors import GslbenchError
from gslbench.lazy import lazy_import

torch = lazy_import("torch")
faiss = lazy_import("faiss")

DEVICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def available_devices() -> list[str]:
    """The device kinds torch can use here: always "cpu", then "cuda" and "mps" when present."""
    return ["cpu", *(["cuda"] if torch.cuda.is_available() else []),
            *(["mps"] if _mps_available() else [])]


def resolve_device(name: str = "auto") -> torch.device:
    """`auto`: the first GPU torch sees (CUDA, else Apple's MPS), else the CPU; `cpu`, `cuda`,
    `mps`: that device, a user error when torch does not see it."""
    if name not in DEVICES:
        raise GslbenchError(f"--device: unknown device {name!r}; known: {', '.join(DEVICES)}")
    available = available_devices()
    if name == "auto":
        return torch.device(available[1] if len(available) > 1 else "cpu")
    if name not in available:
        raise GslbenchError(f"--device {name}: torch sees no {name.upper()} device here "
                            f"(available: {', '.join(available)}); use --device cpu or auto")
    return torch.device(name)


def describe_device(device: torch.device) -> dict[str, str]:
    """What result files record: {"type": "cpu"} or {"type": "cuda", "name": "NVIDIA H100 ..."}."""
    if device.type == "cuda":
        return {"type": "cuda", "name": torch.cuda.get_device_name(device)}
    return {"type": device.type}


def describe_cpu() -> dict[str, str]:
    """What config.json records of the CPU a run was trained on: {"model": its model name,
    "torch": the instruction set of torch's kernels (AVX2, AVX512, ...), "faiss": the options
    of the faiss build that loaded (its instruction set among them)}."""
    return {"model": cpu_model(), "torch": torch.backends.cpu.get_cpu_capability(),
            "faiss": faiss.get_compile_options().strip()}


def cpu_text(cpu: object) -> str:
    """`AMD EPYC; torch AVX512; faiss OPTIMIZE DD AVX2 AVX512` from a `describe_cpu` record (as
    config.json keeps it), or "not recorded" (a run trained before config.json recorded it)."""
    if not isinstance(cpu, dict) or not cpu:
        return "not recorded"
    order = ["model", "torch", "faiss"]  # describe_cpu's: config.json sorts its keys
    names = sorted(cpu, key=lambda name: (order.index(name) if name in order else len(order), name))
    return "; ".join(str(cpu[name]) if name == "model" else f"{name} {cpu[name]}" for name in names)


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what `platform` says of it."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or platform.machine()
