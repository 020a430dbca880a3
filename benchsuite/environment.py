"""What a result needs to be cited: package versions, device, plugins and git commit.

torch is imported where the device is described, not at the top: `benchsuite merge` records the
software half (software_environment) and, like the other commands that only read and copy
results, loads no torch."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

PACKAGES = ("benchsuite", "torch", "torchvision", "numpy", "scikit-learn", "pluggy", "click", "rich", "PyYAML")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_commit(directory: Path | None = None) -> str | None:
    """The commit of the benchsuite checkout (or of `directory`), with '+dirty' if modified."""
    directory = directory or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=5, check=False
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=directory, capture_output=True, text=True, timeout=5, check=False,
        )  # fmt: skip
        return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def device_description(device: torch.device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model() or platform.processor() or platform.machine()


def cpu_model() -> str | None:
    """The CPU's model name (Linux: /proc/cpuinfo), e.g. "AMD EPYC": float32 bits depend on it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() or None
    except OSError:
        return None
    return None


def software_environment() -> dict:
    """The software half of a run's environment: Python, platform, package versions, git commit
    (also the whole record of a `benchsuite merge`, which computes nothing)."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {p: _version(p) for p in PACKAGES},
        "git_commit": git_commit(),
    }


def capture_environment(device: torch.device, registry=None) -> dict:
    """A JSON-able record of the software and hardware a run used."""
    import torch

    environment = {
        **software_environment(),
        "device": str(device),
        "device_name": device_description(device),
        "cuda": torch.version.cuda,
        "torch_threads": torch.get_num_threads(),
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl_cbwr": os.environ.get("MKL_CBWR"),
    }
    if registry is not None:
        environment["plugins"] = [
            {k: p.as_dict()[k] for k in ("name", "distribution", "version", "status")} for p in registry.plugins
        ]
    return environment
