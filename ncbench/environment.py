"""Where a computation ran: the facts that can change its last digits but not its meaning.

Training repeats exactly on one machine, not across CPUs: the kernels torch picks (MKL/oneDNN, the
instruction set it dispatches to, the thread count) round differently. These facts are recorded under
``provenance.environment`` and ``provenance.versions``, and kept out of the job identity
(:mod:`ncbench.identity`).

On CUDA, fp32 means fp32: :func:`configure_numerics` switches TF32 off for matmuls and cuDNN convolutions
(PyTorch leaves it on for cuDNN by default), so a GPU run computes what the CPU computes, to rounding; the
flags are recorded. bf16 is opt-in (``train.precision`` / ``attack.precision``) and part of the identity.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from functools import lru_cache

import torch

from ._errors import InputError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' was asked for but torch sees no CUDA device; use --device cpu or auto")
    return torch.device(name)


def configure_numerics(device: torch.device, threads: int | None = None) -> dict:
    """Set the numeric mode ncbench runs in, and return it: TF32 off (CUDA), the CPU thread count."""
    if threads is not None:
        torch.set_num_threads(int(threads))
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    return {"tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
            "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32), "threads": torch.get_num_threads()}


@lru_cache(maxsize=1)
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@lru_cache(maxsize=1)
def _build_facts() -> dict:
    """The BLAS and oneDNN that this torch was built with (from torch.__config__.show())."""
    text = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=(\w+)", text)
    mkl = re.search(r"Math Kernel Library Version ([\w.\-]+)", text)
    onednn = re.search(r"MKL-DNN v([\w.]+)", text)
    return {"blas": (blas.group(1) if blas else "unknown") + (f" {mkl.group(1)}" if mkl else ""),
            "onednn": onednn.group(1) if onednn else None}


def versions() -> dict:
    """Library versions that can change numbers (environment facts, not identity)."""
    import numpy

    try:
        import torchattacks

        ta = torchattacks.__version__
    except ImportError:  # pragma: no cover - a dependency
        ta = None
    try:
        import torchvision

        tv = torchvision.__version__
    except ImportError:  # pragma: no cover - a dependency
        tv = None
    cuda = torch.version.cuda if torch.cuda.is_available() else None
    cudnn = torch.backends.cudnn.version() if torch.cuda.is_available() else None
    return {"torch": torch.__version__, "torchvision": tv, "torchattacks": ta, "numpy": numpy.__version__,
            "python": sys.version.split()[0], "cuda": cuda, "cudnn": cudnn}


def environment(device: torch.device, *, memory_format: str = "contiguous", numerics: dict | None = None) -> dict:
    """What decided the last digits: device and its name, CPU model and the instruction set torch dispatches
    to, BLAS/oneDNN, thread count, memory format, TF32 flags, host platform."""
    numerics = numerics or {"tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
                            "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        n = numerics["threads"]
        name = f"cpu ({platform.machine()}, {n} thread{'' if n == 1 else 's'})"
    return {"device": device.type, "device_name": name, "platform": platform.platform(),
            "cpu_model": _cpu_model(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": numerics["threads"],
            **_build_facts(), "memory_format": memory_format, "tf32_matmul": numerics["tf32_matmul"],
            "tf32_cudnn": numerics["tf32_cudnn"], "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
