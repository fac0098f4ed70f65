"""What `melanoma env` reports: versions, the devices TensorFlow sees, LiteRT, the platform.

Everything a bug report needs, gathered without failing: a TensorFlow that cannot be imported
is reported as such rather than raised.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

from melanoma_cli import __version__
from melanoma_cli.utils.errors import first_line

# Distributions that install the `tensorflow` module: two at once overwrite each other's files.
TENSORFLOW_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-intel", "tensorflow-macos")


def installed(name: str) -> str | None:
    """The installed version of distribution `name`, None when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _tensorflow() -> dict[str, Any]:
    """TensorFlow's and Keras's versions, CUDA build and visible devices (or why it failed)."""
    try:
        from melanoma_cli.utils.tensorflow import import_keras, import_tensorflow

        keras, tf = import_keras(), import_tensorflow()
    except Exception as exc:  # a broken install raises anything from ImportError to OSError
        return {"tensorflow": None, "keras": installed("keras"), "devices": [],
                "tensorflow_error": first_line(exc)}
    build = tf.sysconfig.get_build_info()
    devices = []
    for device in tf.config.list_physical_devices():
        details = tf.config.experimental.get_device_details(device) if device.device_type == "GPU" else {}
        capability = details.get("compute_capability")
        devices.append({"type": device.device_type, "name": device.name,
                        "description": details.get("device_name"),
                        "compute_capability": ".".join(map(str, capability)) if capability else None})
    return {"tensorflow": tf.__version__, "keras": keras.__version__, "devices": devices,
            "cuda_build": bool(build.get("is_cuda_build")), "cuda": build.get("cuda_version"),
            "cudnn": build.get("cudnn_version")}


def environment() -> dict[str, Any]:
    """The environment summary (imports TensorFlow)."""
    from melanoma_cli.runtime.litert_engine import interpreter_class

    found = _tensorflow()
    return {
        "versions": {
            "melanoma-cli": __version__,
            "tensorflow": found.pop("tensorflow"),
            "keras": found.pop("keras"),
            "numpy": installed("numpy"),
            "python": platform.python_version(),
            "ai-edge-litert": installed("ai-edge-litert"),
        },
        "tensorflow_distributions": {name: version for name in TENSORFLOW_DISTRIBUTIONS
                                     if (version := installed(name))},
        "litert_available": interpreter_class() is not None,
        "platform": {"system": platform.platform(), "machine": platform.machine(),
                     "cpus": os.cpu_count()},
        **found,
    }


def warnings(summary: dict[str, Any]) -> list[str]:
    """Problems in the environment that explain common failures."""
    found = []
    distributions = summary["tensorflow_distributions"]
    if len(distributions) > 1:
        names = " and ".join(distributions)
        found.append(f"{names} are both installed and overwrite each other's files: uninstall both, "
                     "then install one (pip install 'melanoma-cli[gpu]' for NVIDIA GPUs)")
    if "tensorflow_error" in summary:
        found.append(f"TensorFlow cannot be imported: {summary['tensorflow_error']}")
    return found
