"""Rebuild a run folder's ensemble with a shared trunk, and check it gives the same answers.

Loads the run's model (a two-backbone ensemble, or a shared-trunk one), rebuilds it with
models/shared_trunk.py from its own weights (the same fine-tuned network, the same probe) and
prints max and mean |p difference| and top-1 agreement, old vs new, on real images: Keras
against Keras, and, with `--write`, the old LiteRT export against the new one. `--write` replaces
the run's model.keras (deflated, atomically) and re-exports model.tflite where model.json records
it; other recorded exports are reported stale. `--variants DIR` writes instead three run
folders of the same weights for speed comparisons (predict_speed.py --trunk): the shared-trunk
ensemble, the two-backbone ensemble and the fine-tuned network alone (one Lite0).

    python benchmarks/shared_trunk.py RUN [--data DIR] [--images 300] [--write]
    python benchmarks/shared_trunk.py RUN --variants DIR
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, emit

from melanoma_cli.config import load_config
from melanoma_cli.data.images import decode_many
from melanoma_cli.runtime.run_folder import RunFolder, load_model, save_model

DEFAULT_IMAGES = REPO.parent / "shared" / "data" / "isic2018_test" / "images"
BATCH = 32
VARIANTS = ("shared_trunk", "two_backbones", "single_lite0")


def _images(folder: Path, count: int, size: int) -> np.ndarray:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:count]
    if not files:
        raise SystemExit(f"no images in {folder}")
    return decode_many(files, size)[0]


def _keras(network, images: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(network.predict_on_batch(images[i:i + BATCH].astype(np.float32)))
                           for i in range(0, len(images), BATCH)])


def _litert(path: Path, info, images: np.ndarray) -> np.ndarray:
    from melanoma_cli.runtime.litert_engine import load_litert

    return load_litert(path, info).predict(images)


def _compare(what: str, old: np.ndarray, new: np.ndarray, **extra) -> None:
    difference = np.abs(old - new)
    emit("shared_trunk_difference", compared=what, images=len(old), max_abs_p_diff=float(difference.max()),
         mean_abs_p_diff=float(difference.mean()),
         top1_agreement=float((old.argmax(axis=1) == new.argmax(axis=1)).mean()), **extra)


def _nested(flat: object, config, classes: int, size: int):
    """The fine-tuned network in `build_model`'s layout (a nested 'backbone'), with the weights
    of `flat`, a shared-trunk ensemble's fine-tuned member: what a two-backbone ensemble holds."""
    from melanoma_cli.models.build import build_model
    from melanoma_cli.utils.tensorflow import import_keras

    keras = import_keras()
    network = build_model(config, classes, size)
    for layer in network.layers:
        for leaf in (layer.layers if isinstance(layer, keras.Model) else [layer]):
            if leaf.weights:
                leaf.set_weights(flat.get_layer(leaf.name).get_weights())
    return network


def write_variants(run: RunFolder, out: Path) -> None:
    """Run folders `out`/<variant> (model.keras, model.json without exports, config.yaml) of the
    run's ensemble with a shared trunk, with two backbones, and of its fine-tuned network alone."""
    from melanoma_cli.models.ensemble import build_ensemble, build_probe
    from melanoma_cli.models.shared_trunk import fine_tuned_member, probe_weights, share_trunk

    loaded = load_model(run.path)
    config = load_config(run.config)
    size = loaded.info.image_size
    shared = share_trunk(loaded.model, config.model, size)
    fine_tuned = fine_tuned_member(shared)
    kernel, bias = probe_weights(shared)
    nested = _nested(fine_tuned, config.model, len(loaded.info.classes), size)
    two_backbones = build_ensemble(nested, build_probe(config.model, size, kernel, bias))
    info = {**json.loads(run.info.read_text()), "exports": {}, "quantization": {}}
    for name, network in zip(VARIANTS, (shared, two_backbones, fine_tuned), strict=True):
        folder = RunFolder(out / name)
        folder.path.mkdir(parents=True)
        save_model(network, folder.model)
        folder.info.write_text(json.dumps(info, indent=2))
        shutil.copy2(run.config, folder.config)


def main() -> None:
    from melanoma_cli.models.shared_trunk import share_trunk

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="run folder with an ensemble model")
    parser.add_argument("--data", type=Path, default=DEFAULT_IMAGES, help="images to compare on")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--write", action="store_true", help="replace model.keras, re-export model.tflite")
    parser.add_argument("--variants", type=Path, help="write the three speed-comparison run folders here")
    args = parser.parse_args()
    run = RunFolder(args.run)
    if args.variants:
        write_variants(run, args.variants)
        return
    loaded = load_model(run.path)
    config = load_config(run.config)
    size = loaded.info.image_size
    rebuilt = share_trunk(loaded.model, config.model, size)
    images = _images(args.data, args.images, size)
    _compare("keras", _keras(loaded.model, images), _keras(rebuilt, images),
             params_old=loaded.model.count_params(), params_new=rebuilt.count_params())
    if not args.write:
        return
    from melanoma_cli.inference.export import export_model

    float_export = run.export("tflite")
    recorded = loaded.info.exports
    old_litert = _litert(float_export, loaded.info, images) if "tflite" in recorded else None
    save_model(rebuilt, run.model)
    emit("shared_trunk_saved", path=str(run.model), size_bytes=run.model.stat().st_size)
    if old_litert is not None:
        exported = export_model(run.path)
        emit("shared_trunk_exported", **exported)
        _compare("litert", old_litert, _litert(float_export, loaded.info, images),
                 size_bytes=float_export.stat().st_size)
    for key in sorted(set(recorded) - {"tflite"}):
        emit("shared_trunk_stale_export", export=key, hint="re-run melanoma export for it")


if __name__ == "__main__":
    main()
