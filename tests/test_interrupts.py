"""Ctrl-C during training is acknowledged at once and exits with 130, whatever the phase."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import make_dataset


def interrupt_at(args: list[str], marker: str, delay: float = 0.0) -> tuple[int, str, float, float]:
    """Run `melanoma train ARGS`, send SIGINT `delay` s after `marker` appears on stderr.

    Returns the exit code, stderr, and the seconds from the signal to the first line after it
    and to the exit."""
    process = subprocess.Popen([sys.executable, "-m", "melanoma_cli", "train", *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[tuple[float, str]] = []

    def read() -> None:
        for line in process.stderr:
            lines.append((time.monotonic(), line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 180
    while not any(marker in line for _, line in lines) and process.poll() is None:
        assert time.monotonic() < deadline, "".join(line for _, line in lines)
        time.sleep(0.05)
    time.sleep(delay)
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    code = process.wait(timeout=120)
    exited = time.monotonic()
    reader.join(timeout=10)
    after = [moment for moment, _ in lines if moment > sent]
    stderr = "".join(line for _, line in lines)
    return code, stderr, (after[0] if after else exited) - sent, exited - sent


def tiny_args(data: Path, out: Path, *overrides: str) -> list[str]:
    settings = ["data.image_size=32", "data.batch_size=2", "model.filters=[4, 8]", "model.dense_units=8",
                *overrides]
    return ["--data", str(data), "--out", str(out), *(arg for s in settings for arg in ("--set", s))]


@pytest.mark.slow
def test_ctrl_c_during_the_linear_probe_exits_130_at_once(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=60, size=32)
    out = tmp_path / "run"
    args = tiny_args(data, out, "model.backbone=efficientnet_lite0", "model.weights=imagenet",
                     "model.dense_units=0", "model.linear_probe=true", "train.epochs=1")
    code, stderr, acknowledged, exited = interrupt_at(args, "linear probe: frozen features", delay=1.0)
    assert code == 130, stderr
    assert "Interrupted: stopped while fitting the linear probe" in " ".join(stderr.split())
    assert f"melanoma train --resume '{out}'" in " ".join(stderr.split())
    assert "Traceback" not in stderr
    assert acknowledged < 2 and exited < 3, (acknowledged, exited, stderr)


@pytest.mark.slow
def test_ctrl_c_in_the_first_epoch_is_acknowledged_and_exits_130(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=150, size=32)
    out = tmp_path / "run"
    code, stderr, acknowledged, exited = interrupt_at(tiny_args(data, out, "train.epochs=1"), "training on")
    flat = " ".join(stderr.split())
    assert code == 130, stderr
    assert "interrupted: stopping after the current batch" in flat
    assert "Interrupted: training stopped before the first epoch ended" in flat
    assert "Traceback" not in stderr
    # the signal comes while the first step is compiled (seconds), which ends before the stop
    assert acknowledged < 1 and exited < 6, (acknowledged, exited, stderr)
