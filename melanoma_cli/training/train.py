"""`train` and `resume`: a run from its data to a complete run folder.

A run folder holds everything needed to use, judge or resume a run (`RunFolder` names the
files). `train` prepares the data and the folder, `fit` trains, `RunRecord` keeps the folder
resumable after every epoch, and the best model is validated at the end. `resume` rebuilds the
same split (same seed) and goes on from the last completed epoch.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from melanoma_cli.config import Config, SourceConfig, load_config
from melanoma_cli.data import report as data_report
from melanoma_cli.data.images import Unreadable
from melanoma_cli.data.preparation import PreparedData, prepare_data
from melanoma_cli.data.seen import SeenImages
from melanoma_cli.data.sources import source_name
from melanoma_cli.models.ensemble import ENSEMBLE, PROBE
from melanoma_cli.runtime.run_folder import (
    ModelInfo,
    RunFolder,
    check_run_folder,
    prepare_run_folder,
    recorded_sources,
    runtime_versions,
    save_model,
)
from melanoma_cli.runtime.tta import VIEW_COUNT, view
from melanoma_cli.stats.metrics import selection_report, summary, threshold_for_sensitivity
from melanoma_cli.training.distribute import Distribution, choose, use_float32
from melanoma_cli.training.fit import Interrupts, TrainingData, fit
from melanoma_cli.training.linear_probe import LinearProbe, ensemble_probabilities, fit_probe, frozen_features
from melanoma_cli.training.panel import (
    VALIDATION,
    PanelSet,
    load_panel,
    panel_files,
    panel_report,
    panel_threshold,
)
from melanoma_cli.training.run_record import (
    RunRecord,
    TrainState,
    read_history,
    recorded_split,
    split_rows,
    write_result,
    write_split,
)
from melanoma_cli.training.trainer import class_weights, total_epochs
from melanoma_cli.utils.atomic import write_text
from melanoma_cli.utils.errors import Interrupted, MelanomaError
from melanoma_cli.utils.progress import Progress
from melanoma_cli.utils.tensorflow import import_keras, seed_everything


@dataclass
class TrainResult:
    """What `train` and `resume` hand back to the command line."""

    run_dir: Path
    best_epoch: int | None
    validation: dict
    interrupted: bool
    skipped: list[Unreadable]
    summary: dict


@dataclass
class _Run:
    """One training session on a run folder (a new run, or a resumed one)."""

    config: Config
    folder: RunFolder
    data: PreparedData
    record: dict[str, Any]  # model.json "training": where the data came from, what was kept
    state: TrainState
    report: Progress
    distribution: Distribution


def _model_info(run: _Run, status: str, threshold: float | None, training: dict,
                threshold_tta: float | None = None) -> ModelInfo:
    melanoma = run.config.train.melanoma_class
    return ModelInfo(
        classes=run.data.classes,
        image_size=run.config.data.image_size,
        melanoma_class=melanoma if melanoma in run.data.classes else None,
        melanoma_threshold=threshold,
        melanoma_threshold_tta=threshold_tta,
        config_hash=run.config.fingerprint(),
        status=status,
        best_epoch=run.state.best_epoch,
        versions=runtime_versions(),
        training=training,
    )


def _report_data(run: _Run) -> None:
    """Per-class counts to the progress hook and the run record, with small-class warnings."""
    counts = data_report.class_counts(run.data)
    run.record["class_counts"] = counts
    run.report("data", {"class_counts": counts})
    for message in data_report.small_class_warnings(counts):
        run.report("warning", {"message": message})
    no_melanoma = data_report.no_melanoma_class_warning(run.config.train.melanoma_class, run.data.classes)
    if no_melanoma:
        run.report("warning", {"message": no_melanoma})


def _melanoma_threshold(run: _Run, probabilities: np.ndarray) -> float | None:
    """The threshold reaching the configured sensitivity on validation (None without melanoma)."""
    config, data = run.config, run.data
    melanoma = config.train.melanoma_class
    if melanoma not in data.classes:
        return None
    index = data.classes.index(melanoma)
    threshold = threshold_for_sensitivity(data.val_labels == index, probabilities[:, index],
                                          config.train.melanoma_sensitivity)
    if threshold is None:
        run.report("warning", {"message": data_report.no_threshold_warning(melanoma)})
    return threshold


def _tta_probabilities(run: _Run, model: Any) -> np.ndarray:
    """Validation probabilities averaged over the 8 views, as `--tta` computes them."""
    from melanoma_cli.data.pipeline import make_dataset

    images, classes, batch = run.data.val_images, len(run.data.classes), run.config.data.batch_size
    views = [model.predict(make_dataset(np.ascontiguousarray(view(images, index)), None, classes, batch),
                           verbose=0) for index in range(VIEW_COUNT)]
    return np.mean(views, axis=0, dtype=np.float64).astype(np.float32)


def _fit_linear_probe(run: _Run) -> None:
    """Fit the linear probe on the training split's frozen features; keep it in the run folder."""
    config, data = run.config, run.data
    total = len(data.train_labels)
    run.report("status", {"message": f"linear probe: frozen features of {total} training images"})
    started = time.monotonic()
    try:  # nothing to keep yet: an interrupt stops at once
        with Interrupts(at_once=True).installed():
            features = frozen_features(config, data.train_images)
            probe = fit_probe(features, data.train_labels, len(data.classes),
                              config.model.linear_probe_c, config.train.class_weights)
            probe.save(run.folder.linear_probe)
    except KeyboardInterrupt:
        raise Interrupted(f"stopped while fitting the linear probe, before the first epoch; start "
                          f"again with: melanoma train --resume '{run.folder.path}'") from None
    run.record["linear_probe_seconds"] = round(time.monotonic() - started, 1)


def _melanoma_index(run: _Run) -> int:
    melanoma = run.config.train.melanoma_class
    if melanoma not in run.data.classes:
        raise MelanomaError(f"config key 'data.panel' (or train.monitor: panel_melanoma_auc) scores the "
                            f"melanoma flag, but the data has no class '{melanoma}' (train.melanoma_class)")
    return run.data.classes.index(melanoma)


def _panel(run: _Run) -> list[PanelSet]:
    """The panel sets, decoded, as datasets, with the linear probe's probabilities if there is one."""
    from melanoma_cli.data.pipeline import make_dataset

    config = run.config
    run.report("status", {"message": "panel: decoding " + ", ".join(s.path for s in config.data.panel)})
    members = load_panel(config.data.panel, config.train.melanoma_class, config.data.image_size)
    for member in members:
        member.dataset = make_dataset(member.images, None, len(run.data.classes), config.data.batch_size)
        if config.model.linear_probe:
            member.probe = _probe_probabilities(run, member.images)
    return members


def _probe_probabilities(run: _Run, images: np.ndarray) -> np.ndarray:
    """The run's linear probe on `images` (its frozen features, then its softmax layer)."""
    run.report("status", {"message": f"linear probe: frozen features of {len(images)} validation images"})
    interrupts = Interrupts()
    with interrupts.installed():
        features = frozen_features(run.config, images, lambda: interrupts.requested)
    if features is None:
        raise MelanomaError(f"interrupted before the first epoch; start again with: "
                            f"melanoma train --resume '{run.folder.path}'")
    return LinearProbe.load(run.folder.linear_probe).probabilities(features)


def _panel_threshold(run: _Run, best: Any, probabilities: np.ndarray,
                     data: TrainingData) -> tuple[float | None, dict]:
    """The threshold that keeps the sensitivity target on the validation split and every panel set,
    and the panel's report at it."""
    melanoma, target = data.melanoma_index, run.config.train.melanoma_sensitivity
    sets = {VALIDATION: (run.data.val_labels == melanoma, probabilities[:, melanoma])}
    for member in data.panel:
        shipped = np.asarray(best.predict(member.dataset, verbose=0))
        sets[member.name] = (member.is_melanoma, shipped[:, melanoma])
    threshold = panel_threshold(sets, target)
    return threshold, panel_report(sets, threshold, target)


def _best_model(run: _Run, val_dataset: Any) -> tuple[Any, np.ndarray, dict]:
    """The model to ship (float32 throughout), its validation probabilities, and each ensemble
    member's validation.

    With `model.linear_probe` it is the best fine-tuned network averaged with the probe: on
    EfficientNet-Lite0 in one pass, the pretrained blocks shared (models/shared_trunk.py)."""
    from melanoma_cli.models.saving import float32_copy, load_network
    from melanoma_cli.models.shared_trunk import build_shipped_ensemble, fine_tuned_member, members_model

    config, folder = run.config, run.folder
    fine_tuned = float32_copy(fine_tuned_member(load_network(folder.model)))
    if not config.model.linear_probe:
        return fine_tuned, fine_tuned.predict(val_dataset, verbose=0), {}
    weights = LinearProbe.load(folder.linear_probe)
    ensemble = build_shipped_ensemble(fine_tuned, weights.kernel, weights.bias, config.model,
                                      config.data.image_size)
    if ensemble.name == ENSEMBLE:  # two backbones: each member on its own
        probabilities = fine_tuned.predict(val_dataset, verbose=0)
        probe_probabilities = ensemble.get_layer(PROBE).predict(val_dataset, verbose=0)
        shipped = ensemble_probabilities(probabilities, probe_probabilities)
    else:
        probabilities, probe_probabilities, shipped = members_model(ensemble).predict(val_dataset, verbose=0)
    members = {"fine_tuned": summary(run.data.val_labels, probabilities, run.data.classes),
               "linear_probe": summary(run.data.val_labels, probe_probabilities, run.data.classes)}
    return ensemble, shipped, members


def _finish(run: _Run, data_for_fit: TrainingData, interrupted: bool) -> TrainResult:
    """Validate the best model and write model.json, metrics.json and the curves."""
    config, data, state, folder = run.config, run.data, run.state, run.folder
    best, probabilities, members = _best_model(run, data_for_fit.validation)
    save_model(best, folder.model)  # without optimizer state: a third of the size
    threshold, panel = _melanoma_threshold(run, probabilities), None
    if data_for_fit.panel:
        threshold, panel = _panel_threshold(run, best, probabilities, data_for_fit)
    threshold_tta = None if threshold is None else _melanoma_threshold(run, _tta_probabilities(run, best))
    validation = selection_report(data.val_labels, probabilities, data.classes, config.train.melanoma_class,
                                  threshold, config.train.monitor)
    epochs_run = len(read_history(folder))
    metrics = {
        "best_epoch": state.best_epoch,
        "monitor": config.train.monitor,
        "data": {**data.split.summary(), "generated": data.generated, "skipped": len(data.skipped),
                 "class_counts": run.record["class_counts"]},
        "validation": validation,
        **({"members": members} if members else {}),
        **({"panel": panel} if panel else {}),
        "melanoma_threshold": threshold,
        "melanoma_threshold_tta": threshold_tta,
    }
    seconds = max(state.train_seconds, 1e-9)
    training = {
        **run.record,
        "epochs_run": epochs_run,
        "interrupted": interrupted,
        "train_seconds": round(seconds, 1),
        "train_images_per_second": round(epochs_run * len(data.train_labels) / seconds, 1),
    }
    _model_info(run, "incomplete" if interrupted else "complete", threshold, training,
                threshold_tta).save(folder.path)
    SeenImages.of([*data.split.train, *data.split.validation]).save(folder.seen_images)
    write_result(folder, metrics)
    run_summary = {"run_dir": str(folder.path), **metrics, "training": training}
    return TrainResult(folder.path, state.best_epoch, validation, interrupted, data.skipped, run_summary)


def _train_run(run: _Run) -> TrainResult:
    """Train `run` from its state to the end (or an interrupt), then write its result files."""
    from melanoma_cli.data.pipeline import build_augmenter, make_dataset

    import_keras()
    config, data = run.config, run.data
    seed_everything(config.seed)
    num_classes, batch = len(data.classes), config.data.batch_size
    if batch < run.distribution.replicas:
        raise MelanomaError(f"config key 'data.batch_size' ({batch}) must be at least the number of "
                            f"replicas ({run.distribution.replicas}): it is the global batch, split "
                            "among them")
    training_data = TrainingData(
        train=make_dataset(data.train_images, data.train_labels, num_classes, batch, shuffle=True,
                           augmenter=build_augmenter(config.augment, config.seed), seed=config.seed),
        validation=make_dataset(data.val_images, None, num_classes, batch),
        train_images=len(data.train_labels),
        val_labels=data.val_labels,
        num_classes=num_classes,
        steps_per_epoch=int(np.ceil(len(data.train_labels) / batch)),
        class_weight=class_weights(config, data.train_labels, num_classes),
    )
    use_float32()  # the probe's features, like the model that ships, are float32
    if config.model.linear_probe:
        if not run.folder.linear_probe.is_file():
            _fit_linear_probe(run)
        training_data.val_probe = _probe_probabilities(run, data.val_images)
    if config.data.panel or config.train.monitor == "panel_melanoma_auc":
        training_data.melanoma_index = _melanoma_index(run)
        training_data.panel = _panel(run)
    record = RunRecord.open(run.folder, config.train.monitor, run.state)
    with run.distribution.precision():  # float32 outside: the probe above, the model that ships
        interrupted = fit(config, training_data, record, run.report, run.distribution)
    if run.state.best_epoch is None:
        raise Interrupted(f"training stopped before the first epoch ended; no model saved in "
                          f"'{run.folder.path}' (start it again with: melanoma train --resume "
                          f"'{run.folder.path}')")
    if interrupted:
        run.report("status", {"message": "interrupted: validating the best checkpoint and writing "
                                         "the run folder"})
    return _finish(run, training_data, interrupted)


def _refuse_output_inside(out: Path, inputs: Sequence[Path]) -> None:
    """A run folder is never written into the data or a holdout folder."""
    target = Path(os.path.realpath(out))
    for folder in inputs:
        if target.is_relative_to(os.path.realpath(folder)):
            raise MelanomaError(f"refusing to write run folder '{out}' inside input folder '{folder}'")


def _is_resumable(out: Path) -> bool:
    """Whether `melanoma train --resume` would take up the folder."""
    try:
        _load_run(RunFolder(out))
    except MelanomaError:
        return False
    return True


def _source_record(spec: SourceConfig) -> dict[str, Any]:
    """A source as model.json records it: absolute path and name (enough to resume)."""
    return {**spec.model_dump(), "path": str(Path(spec.path).absolute()), "name": source_name(spec)}


def _as_worker(out: Path, start: Callable[[Path], TrainResult], copy_of: Path | None = None) -> TrainResult:
    """A non-chief worker's session: the same training on a temporary run folder, then removed.

    `copy_of` (a run folder to resume) is copied there first. The result names `out`, the run
    folder the chief writes.
    """
    with tempfile.TemporaryDirectory(prefix="melanoma-worker-") as tmp:
        folder = Path(tmp) / "run"
        if copy_of is not None:
            shutil.copytree(copy_of, folder)
        result = start(folder)
    return dataclasses.replace(result, run_dir=out, summary={**result.summary, "run_dir": str(out)})


def train(
    config: Config,
    sources: Sequence[SourceConfig],
    out: Path,
    *,
    overwrite: bool = False,
    holdout_dirs: Sequence[Path] = (),
    progress: Progress | None = None,
) -> TrainResult:
    """Train a model on the config's and the given sources and write a run folder to `out`.

    Under multi_worker only the chief writes `out`; the other workers train alongside it.
    """
    report = progress or (lambda kind, values: None)
    distribution = choose(config)
    if not distribution.is_chief:
        report("status", {"message": f"worker of a multi_worker run: the chief writes '{out}'"})
        return _as_worker(out, lambda folder: _train(config, sources, folder, False, holdout_dirs, report,
                                                     distribution))
    return _train(config, sources, out, overwrite, holdout_dirs, report, distribution)


def _train(config: Config, sources: Sequence[SourceConfig], out: Path, overwrite: bool,
           holdout_dirs: Sequence[Path], report: Progress, distribution: Distribution) -> TrainResult:
    """`train` on one run folder."""
    folder = RunFolder(Path(out))
    holdouts = [Path(p).absolute() for p in [*config.data.holdout_dirs, *holdout_dirs]]
    recorded = [_source_record(spec) for spec in [*config.data.sources, *sources]]
    _refuse_output_inside(out, [Path(s["path"]) for s in recorded] + holdouts)
    hint = (f"use --resume '{out}' to continue it or --overwrite to replace it"
            if not overwrite and out.is_dir() and _is_resumable(out) else "use --overwrite to replace it")
    check_run_folder(out, overwrite, hint)  # before the slow part; nothing is replaced until data is ready
    report("status", {"message": "scanning and decoding " + ", ".join(s["path"] for s in recorded)})
    data = prepare_data(config, sources, holdouts, panel_files(config.data.panel))
    prepare_run_folder(out, overwrite)
    write_text(folder.config, config.to_yaml())
    write_split(folder, data.split)
    record = {"data_dir": recorded[0]["path"] if recorded else None, "sources": recorded,
              "holdout_dirs": [str(p) for p in holdouts],
              "distribute": distribution.record(config.data.batch_size)}
    run = _Run(config, folder, data, record, TrainState(), report, distribution)
    _report_data(run)
    _model_info(run, "incomplete", None, record).save(out)  # a crash leaves a resumable run
    return _train_run(run)


def _load_run(folder: RunFolder) -> tuple[Config, ModelInfo, TrainState]:
    """The config, model.json and state of a run folder that can be resumed."""
    run_dir = folder.path
    needed = (folder.info, folder.config, folder.split)
    if not all(path.is_file() for path in needed):
        names = ", ".join(path.name for path in needed[:-1]) + f" and {needed[-1].name}"
        raise MelanomaError(f"cannot resume '{run_dir}': not a run folder (it needs {names})")
    try:
        config = load_config(folder.config)
    except MelanomaError as exc:
        raise MelanomaError(f"cannot resume '{run_dir}': {exc}") from exc
    info = ModelInfo.load(folder.info)
    state = TrainState.load(folder)
    if state is None:
        if folder.model.exists():
            raise MelanomaError(f"cannot resume '{run_dir}': it has a model but no {folder.state.name} "
                                "(made by an older version?); train it again with --overwrite")
        state = TrainState()
    elif state.epochs_done > 0 and not folder.last.is_file():
        raise MelanomaError(f"cannot resume '{run_dir}': '{folder.last.name}' is missing")
    total = total_epochs(config)
    if state.epochs_done >= total:
        raise MelanomaError(f"run '{run_dir}' has trained all {total} epochs; nothing to resume")
    return config, info, state


def _check_same_data(folder: RunFolder, info: ModelInfo, data: PreparedData) -> None:
    """A resumed run must see the data it was trained on: same classes, same split by content."""
    if data.classes != info.classes:
        raise MelanomaError(f"cannot resume '{folder.path}': the classes in the data "
                            f"({', '.join(data.classes)}) are not the run's ({', '.join(info.classes)})")
    recorded = recorded_split(folder)
    current = Counter(row[1:] for row in split_rows(data.split))
    if current != recorded:
        differ = sum(((recorded - current) + (current - recorded)).values())
        raise MelanomaError(f"cannot resume '{folder.path}': the data does not give the split "
                            f"recorded in {folder.split.name} ({differ} file(s) differ)")


def _recorded_inputs(folder: RunFolder, info: ModelInfo,
                     moved: Sequence[SourceConfig]) -> tuple[dict[str, Any], list[SourceConfig]]:
    """The record of the sources (`moved` ones if given) and holdout folders, and the sources."""
    training = info.training if isinstance(info.training, dict) else {}
    holdouts = training.get("holdout_dirs", [])
    specs = list(moved) or recorded_sources(info, folder.info)
    if not specs:
        raise MelanomaError(f"run '{folder.path}' does not record its data folder; give it with --data")
    if not isinstance(holdouts, list) or not all(isinstance(p, str) for p in holdouts):
        raise MelanomaError(f"model info '{folder.info}': 'training.holdout_dirs' must be "
                            "a list of folders")
    record = {"data_dir": specs[0].path, "sources": [s.model_dump() for s in specs],
              "holdout_dirs": holdouts}
    return record, specs


def resume(run_dir: Path, sources: Sequence[SourceConfig] = (),
           progress: Progress | None = None) -> TrainResult:
    """Continue the run in `run_dir` from its last completed epoch, with its own config.

    The sources and holdout folders are the ones recorded in model.json; `sources` replace
    them (e.g. after the data moved). The split must come out the same. Under multi_worker
    every worker resumes from `run_dir` (a shared folder, or a copy); only the chief writes it.
    """
    report = progress or (lambda kind, values: None)
    folder = RunFolder(Path(run_dir))
    config = _load_run(folder)[0]
    distribution = choose(config)
    if not distribution.is_chief:
        return _as_worker(folder.path, lambda copy: _resume(RunFolder(copy), sources, report, distribution),
                          copy_of=folder.path)
    return _resume(folder, sources, report, distribution)


def _resume(folder: RunFolder, sources: Sequence[SourceConfig], report: Progress,
            distribution: Distribution) -> TrainResult:
    """`resume` on one run folder."""
    config, info, state = _load_run(folder)
    record, specs = _recorded_inputs(folder, info, sources)
    record["distribute"] = distribution.record(config.data.batch_size)
    report("status", {"message": f"resuming '{folder.path}' after epoch {state.epochs_done}: "
                                 "scanning and decoding " + ", ".join(s.path for s in specs)})
    config = config.model_copy(update={"data": config.data.model_copy(update={"sources": []})})
    holdouts = [Path(p) for p in record["holdout_dirs"]]
    data = prepare_data(config, specs, holdouts, panel_files(config.data.panel))
    _check_same_data(folder, info, data)
    run = _Run(config, folder, data, record, state, report, distribution)
    _report_data(run)
    return _train_run(run)
