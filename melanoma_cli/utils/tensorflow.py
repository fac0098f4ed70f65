"""The single place that imports TensorFlow/Keras, quietly and reproducibly."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

# Before anything imports TensorFlow: no lines from its C++ core. Level 3 also hides ERROR lines,
# such as the GPU build's "failed call to cuInit" on every machine without a GPU; set
# TF_CPP_MIN_LOG_LEVEL=0 to see them when a GPU is not found (`melanoma env` lists the devices).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


@contextmanager
def silenced_stderr() -> Iterator[None]:
    """Send native (C++) writes to file descriptor 2 to /dev/null for a moment."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_keras() -> ModuleType:
    """Import Keras on the TensorFlow backend without TensorFlow's start-up log lines."""
    if "keras" in sys.modules and "tensorflow" in sys.modules:
        return sys.modules["keras"]
    with silenced_stderr():
        import tensorflow  # its import prints native log lines
    import absl.logging
    import keras

    absl.logging.set_verbosity(absl.logging.ERROR)
    tensorflow.get_logger().setLevel("ERROR")  # e.g. "triggered tf.function retracing"
    return keras


def import_tensorflow() -> ModuleType:
    """Import TensorFlow, quietly (with Keras on top of it, as `import_keras` does)."""
    import_keras()
    return sys.modules["tensorflow"]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, and make TensorFlow's ops deterministic."""
    keras = import_keras()
    tf = import_tensorflow()

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def fix_keras_multi_worker_logs() -> None:
    """Let Keras 3 `fit` log under MultiWorkerMirroredStrategy (called when that strategy is chosen).

    Keras (3.15) averages a multi-worker step's scalar logs along axis 0, which a scalar lacks,
    and the step fails. This wraps Keras's internal `reduce_per_replica` so that all-scalar logs
    are averaged whole (axis None), which is what they mean; everything else goes to Keras as is.
    """
    from keras.src.backend.tensorflow import trainer

    original = trainer.reduce_per_replica
    if getattr(original, "fixed_for_multi_worker", False):
        return

    tf = import_tensorflow()

    def scalar(value: Any) -> bool:
        parts = value.values if isinstance(value, tf.distribute.DistributedValues) else (value,)
        return all(part.shape.rank == 0 for part in parts)

    def reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
        if (reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy)
                and all(scalar(value) for value in tf.nest.flatten(values))):
            return tf.nest.map_structure(lambda value: strategy.reduce("MEAN", value, axis=None), values)
        return original(values, strategy, reduction)

    reduce_per_replica.fixed_for_multi_worker = True  # type: ignore[attr-defined]
    trainer.reduce_per_replica = reduce_per_replica
