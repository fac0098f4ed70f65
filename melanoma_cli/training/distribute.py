"""Which tf.distribute strategy trains a run (`train.distribute`), and who writes the run folder.

- `none`: the default strategy, one device (the first GPU if there is one, else the CPU);
- `mirrored`: MirroredStrategy over every local GPU (over the logical CPUs when there is no GPU);
- `multi_worker`: MultiWorkerMirroredStrategy over the machines that `TF_CONFIG` describes;
- `auto`: mirrored when TensorFlow sees more than one GPU, else none.

`data.batch_size` is the global batch: each of the N replicas gets 1/N of every batch. Under
multi_worker only the chief writes the run folder; the other workers train the same steps and
write theirs to a temporary folder that is removed at the end.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from melanoma_cli.config import Config
from melanoma_cli.utils.errors import MelanomaError
from melanoma_cli.utils.tensorflow import fix_keras_multi_worker_logs, import_keras, import_tensorflow


@dataclass
class Distribution:
    """A strategy and the facts the run record states about it."""

    strategy: Any
    name: str  # "none", "mirrored" or "multi_worker" (what `auto` resolved to)
    replicas: int
    workers: int
    is_chief: bool
    mixed_precision: bool

    def record(self, global_batch: int) -> dict[str, Any]:
        """model.json's "distribute" entry: strategy, replicas and the global batch size."""
        return {"strategy": self.name, "replicas": self.replicas, "workers": self.workers,
                "global_batch_size": global_batch, "mixed_precision": self.mixed_precision}

    @contextmanager
    def precision(self) -> Iterator[None]:
        """The Keras policy for fine-tuning: mixed_float16 when asked (the output layer stays
        float32), float32 otherwise; float32 again afterwards, so that the linear probe's
        features and the model that ships are computed and saved in float32."""
        import_keras().mixed_precision.set_global_policy(
            "mixed_float16" if self.mixed_precision else "float32")
        try:
            yield
        finally:
            use_float32()

    def adopt(self, model: Any) -> Any:
        """A model built in `strategy.scope()`, to be trained with `fit` inside that scope too.

        Under multi_worker, Keras 3 reduces one batch across the workers to size its graph, which
        fails for (images, labels) pairs; a model that does not hold its own strategy takes it
        from the enclosing scope and skips that step (with one replica per worker, the model's
        state is then built in the first training step, which works).
        """
        if self.name == "multi_worker":
            model._distribute_strategy = None
        return model


def _check_tf_config() -> None:
    """TF_CONFIG must name the workers and this machine's task (an error naming it otherwise)."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise MelanomaError("config key 'train.distribute' is multi_worker but TF_CONFIG is not set "
                            "(it lists the workers and this machine's task; see README)")
    try:
        values = json.loads(text)
        workers, task = values["cluster"]["worker"], values["task"]
    except (ValueError, KeyError, TypeError) as exc:
        raise MelanomaError("TF_CONFIG must be JSON like {\"cluster\": {\"worker\": [\"host:port\", ...]}, "
                            "\"task\": {\"type\": \"worker\", \"index\": 0}}") from exc
    if not isinstance(workers, list) or not workers:
        raise MelanomaError("TF_CONFIG: 'cluster.worker' must list at least one host:port")
    if not isinstance(task, dict) or not isinstance(task.get("type"), str) \
            or not isinstance(task.get("index"), int):
        raise MelanomaError("TF_CONFIG: 'task' must give this machine's 'type' (worker or chief) and "
                            "'index'")


def _is_chief(strategy: Any) -> bool:
    """The chief task, or worker 0 when the cluster has no chief (as TensorFlow defines it)."""
    resolver = strategy.cluster_resolver
    task_type, task_id = resolver.task_type, resolver.task_id
    chief_named = "chief" in resolver.cluster_spec().as_dict()
    return task_type is None or task_type == "chief" or (task_type == "worker" and task_id == 0
                                                           and not chief_named)


def use_float32() -> None:
    """Set the global Keras policy to float32 (whatever set it before)."""
    import_keras().mixed_precision.set_global_policy("float32")


def _check_precision(config: Config, gpus: int) -> None:
    """mixed_float16 is for GPUs: refused where TensorFlow sees none."""
    if config.train.mixed_precision and gpus == 0:
        raise MelanomaError("config key 'train.mixed_precision' needs a GPU and TensorFlow sees none "
                            "(set it to false)")


def choose(config: Config) -> Distribution:
    """The strategy `train.distribute` asks for (mixed precision is checked here, set by `precision`).

    Call it before TensorFlow runs anything else: MultiWorkerMirroredStrategy has to be created
    before the runtime starts.
    """
    name = config.train.distribute
    if name == "multi_worker":
        _check_tf_config()  # a clear error before TensorFlow tries to reach the other workers
    tf = import_tensorflow()
    if name == "multi_worker":
        fix_keras_multi_worker_logs()
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        cluster = strategy.cluster_resolver.cluster_spec().as_dict()
        workers = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
        is_chief = _is_chief(strategy)
    else:
        gpus = tf.config.list_logical_devices("GPU")
        if name == "auto":
            name = "mirrored" if len(gpus) > 1 else "none"
        if name == "mirrored":
            devices = gpus or tf.config.list_logical_devices("CPU")
            strategy = tf.distribute.MirroredStrategy([device.name for device in devices])
        else:
            strategy = tf.distribute.get_strategy()
        workers, is_chief = 1, True
    _check_precision(config, len(tf.config.list_logical_devices("GPU")))
    return Distribution(strategy, name, int(strategy.num_replicas_in_sync), workers, is_chief,
                        config.train.mixed_precision)
