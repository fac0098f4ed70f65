"""What every benchmark shares: paths, the machine record, child processes and JSON lines.

Measurements that compare two things run as children of one benchmark process, one after the
other, so that a noisy machine (another job, thermal limits) affects both sides alike: compare
ratios from one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "isic9" / "Train"
_SCRIPT = Path(sys.executable).with_name("melanoma")
MELANOMA = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "melanoma_cli"]


def step_parser(description: str) -> argparse.ArgumentParser:
    """Options shared by the step-timing benchmarks: data, timed and warm-up steps, overrides."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", action="append", default=None, metavar="[NAME=]PATH",
                        help="training source (repeatable: final.yaml pools them; the original "
                             "recipe uses the first) [default: ../shared/data/isic9/Train]")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a final.yaml value, e.g. data.image_size=180 (repeatable)")
    return parser


def data_args(args: argparse.Namespace) -> list[str]:
    """The --data values of a step parser, defaulted, as strings (to pass on to a child)."""
    return args.data or [str(DEFAULT_DATA)]


def keras_layers_augmenter(config: Any, seed: int) -> Any:
    """The augmentation final.yaml used before the fused transform: one Keras layer per operation
    (kept here only to measure against; the product uses data/pipeline.py's FusedAugmenter)."""
    from melanoma_cli.utils.tensorflow import import_keras

    keras = import_keras()
    layers = []
    if config.flip:
        layers.append(keras.layers.RandomFlip("horizontal_and_vertical", seed=seed))
    if config.rotation > 0:
        layers.append(keras.layers.RandomRotation(config.rotation, fill_mode="reflect", seed=seed + 1))
    if config.zoom > 0:
        layers.append(keras.layers.RandomZoom((-config.zoom, config.zoom), fill_mode="reflect",
                                              seed=seed + 2))
    if config.translation > 0:
        layers.append(keras.layers.RandomTranslation(config.translation, config.translation,
                                                     fill_mode="reflect", seed=seed + 3))
    if config.contrast > 0:
        layers.append(keras.layers.RandomContrast(config.contrast, value_range=(0, 255), seed=seed + 4))
    if config.brightness > 0:
        layers.append(keras.layers.RandomBrightness(config.brightness, value_range=(0, 255),
                                                    seed=seed + 5))
    if config.saturation > 0:
        layers.append(keras.layers.RandomSaturation(
            (0.5 - config.saturation / 2, 0.5 + config.saturation / 2), value_range=(0, 255),
            seed=seed + 6))
    if config.hue > 0:
        layers.append(keras.layers.RandomHue(config.hue, value_range=(0, 255), seed=seed + 7))
    return keras.Sequential(layers, name="augmentation")


AUGMENTERS = ("keras-layers", "fused")


def augmenter(name: str, config: Any) -> Any:
    """`keras-layers` (before) or `fused` (data/pipeline.py, what training uses) for final.yaml."""
    from melanoma_cli.data.pipeline import build_augmenter

    if name == "keras-layers":
        return keras_layers_augmenter(config.augment, config.seed)
    return build_augmenter(config.augment, config.seed)


def machine() -> dict[str, Any]:
    """CPU model, core count and load when the benchmark started (a busy machine reads slow)."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "load_1m": round(os.getloadavg()[0], 2)}


def emit(benchmark: str, **fields: Any) -> None:
    """Print one JSON line: the benchmark's name, its fields and the machine."""
    print(json.dumps({"benchmark": benchmark, **fields, "machine": machine()}), flush=True)


@dataclass
class Child:
    """A finished child process: its stdout, wall time and peak resident memory."""

    stdout: str
    wall_s: float
    peak_rss_mb: float

    def last_json(self) -> dict[str, Any]:
        """The last line of stdout, parsed as JSON."""
        return json.loads(self.stdout.strip().splitlines()[-1])


def run_child(args: list[str], cwd: Path | None = None) -> Child:
    """Run a command to completion; raise with its stderr if it fails.

    Peak RSS comes from wait4 on this child alone (getrusage(RUSAGE_CHILDREN) would report the
    largest child so far, hiding a small process measured after a big one).
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(args, stdout=out, stderr=err, cwd=cwd, env=env, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, args))} failed ({process.returncode}):\n{err.read()}")
        return Child(out.read(), wall, round(usage.ru_maxrss / 1024, 1))
