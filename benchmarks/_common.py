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
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a final.yaml value, e.g. data.image_size=180 (repeatable)")
    return parser


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
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
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
