"""The run folder's bookkeeping during and after training.

After every epoch the run folder holds what a resume needs (`RunRecord.save_epoch`):

- `last.keras`: the model after the last completed epoch, with its optimizer state;
- `state.json`: epochs done, the best monitored value and its epoch, training time so far;
- `history.csv`: one row per completed epoch, epoch 1 being the first;
- `model.keras`: the best model so far, replaced only when the monitored value improves.

At the start a run gets config.yaml, split.csv and an "incomplete" model.json; at the end
model.json, metrics.json and curves.png (`write_result`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from melanoma_cli.data.split import Split
from melanoma_cli.runtime.run_folder import RunFolder, save_model
from melanoma_cli.training.trainer import lower_is_better
from melanoma_cli.utils.atomic import write_text
from melanoma_cli.utils.errors import MelanomaError


@dataclass
class TrainState:
    """state.json: where a run stands after its last completed epoch."""

    epochs_done: int = 0  # also the 0-based index of the next epoch
    best_value: float | None = None
    best_epoch: int | None = None  # 1-based, as in history.csv
    train_seconds: float = 0.0

    def improves(self, value: float, monitor: str) -> bool:
        """Whether `value` of `monitor` beats the best so far (a NaN best is beaten by anything)."""
        if self.best_value is None or math.isnan(self.best_value):
            return True
        return value < self.best_value if lower_is_better(monitor) else value > self.best_value

    def save(self, run: RunFolder) -> None:
        """Write state.json atomically."""
        write_text(run.state, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, run: RunFolder) -> TrainState | None:
        """The saved state of a run folder, None if it has none."""
        if not run.state.exists():
            return None
        try:
            state = cls(**json.loads(run.state.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            raise MelanomaError(f"cannot resume: '{run.state}' is damaged ({exc})") from exc
        if not isinstance(state.epochs_done, int) or state.epochs_done < 0:
            raise MelanomaError(f"cannot resume: '{run.state}' has no valid 'epochs_done'")
        return state


def read_history(run: RunFolder) -> list[dict[str, str]]:
    """The rows of a run's history.csv (empty if it has none)."""
    if not run.history.exists():
        return []
    with run.history.open(newline="") as handle:
        return list(csv.DictReader(handle))


def history_csv(rows: list[dict[str, Any]]) -> str:
    """history.csv text: epoch, then the logged values in name order."""
    names = ["epoch", *sorted(name for name in rows[0] if name != "epoch")] if rows else ["epoch"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, names, restval="", extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def split_rows(split: Split) -> list[tuple[str, str, str, str]]:
    """(path, label, sha256, side) of every file in the split."""
    return [(str(f.path), f.label, f.sha256, side)
            for side, files in (("train", split.train), ("validation", split.validation))
            for f in files]


def write_split(run: RunFolder, split: Split) -> None:
    """split.csv: which file went to which side, so the validation set can be rebuilt exactly."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label", "sha256", "side"])
    writer.writerows(split_rows(split))
    write_text(run.split, buffer.getvalue())


def recorded_split(run: RunFolder) -> Counter:
    """(label, sha256, side) counts from split.csv."""
    try:
        with run.split.open(newline="", encoding="utf-8") as handle:
            return Counter((r["label"], r["sha256"], r["side"]) for r in csv.DictReader(handle))
    except (OSError, KeyError, csv.Error) as exc:
        raise MelanomaError(f"cannot resume: '{run.split}' is damaged ({exc})") from exc


@dataclass
class RunRecord:
    """The per-epoch files of one training session (a new run, or a resumed one)."""

    run: RunFolder
    monitor: str
    state: TrainState
    history: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    seconds_before: float = 0.0

    @classmethod
    def open(cls, run: RunFolder, monitor: str, state: TrainState) -> RunRecord:
        """Go on from `state`; history rows are renumbered 1..N (older runs counted from 0)."""
        rows = read_history(run)[:state.epochs_done]
        history = [{**row, "epoch": number} for number, row in enumerate(rows, start=1)]
        return cls(run, monitor, state, history, seconds_before=state.train_seconds)

    def save_epoch(self, model: Any, epoch: int, logs: dict[str, float]) -> None:
        """Write the epoch's files; `epoch` is 1-based. Call with interrupts held."""
        self.history.append({"epoch": epoch, **logs})
        save_model(model, self.run.last)
        value = logs[self.monitor]
        if self.state.improves(value, self.monitor):
            self.state.best_value, self.state.best_epoch = value, epoch
            # Keras 3 saves the optimizer state with it; the end of the run writes it again without.
            save_model(model, self.run.model)
        self.state.epochs_done = epoch
        self.state.train_seconds = self.seconds_before + time.perf_counter() - self.started
        write_text(self.run.history, history_csv(self.history))
        self.state.save(self.run)


def write_result(run: RunFolder, metrics: dict[str, Any]) -> None:
    """metrics.json and curves.png of a finished (or interrupted) run."""
    from melanoma_cli.utils.plots import plot_training_curves

    write_text(run.metrics, json.dumps(metrics, indent=2) + "\n")
    plot_training_curves(run.history, run.curves)
