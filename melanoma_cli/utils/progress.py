"""Progress events: how the core tells its caller what it is doing, without printing anything.

A `Progress` callback receives an event kind and its values:

- "status": {"message": str}: a one-line note on the current step.
- "start": work begins. Prediction: {"total": images}; training: {"train", "validation",
  "epochs", "steps", "done"} (images per split, epochs in all, steps per epoch, epochs done).
- "batch": one batch done. Prediction: {"images": images in it}; training: {"batch": step}.
- "epoch": one training epoch done: {"epoch": number, **metrics (loss, val_accuracy, ...)}.
- "data": training's per-class counts after cleaning: {"class_counts": {class: {...}}}.
- "warning": {"message": str}: something the user must see (a small class, no melanoma class).

`EventKind` declares them; callers ignore kinds they do not show.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

EventKind = Literal["status", "start", "batch", "epoch", "data", "warning"]
Progress = Callable[[EventKind, dict[str, Any]], None]


def no_progress(kind: EventKind, values: dict[str, Any]) -> None:
    """The default callback: ignore every event."""
