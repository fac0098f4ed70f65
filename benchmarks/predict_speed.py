"""Prediction speed: cold start for one image and batch throughput, Keras vs LiteRT engines.

Every measurement of `melanoma ...` is a fresh child process (what a user or a script sees),
alternating engines so both see the same machine load:
  - `melanoma --help` and `melanoma predict --help` wall time;
  - cold start: `melanoma predict ONE.jpg --engine keras|litert --json` wall time and peak RSS;
  - batch: `melanoma predict` over `--images` (1,000) files per engine (litert-int8, litert,
    keras): wall time and peak RSS, plus, inside one child per engine, decode and model img/s
    measured apart; and the int8 / float ratios.

With `--trunk`, instead: the model's ensemble with a shared trunk against the same weights with
two backbones and against its fine-tuned network alone (one Lite0), each exported to .tflite,
alternating round by round: `melanoma predict` over `--images` files per engine (whole-CLI img/s,
peak RSS, and model img/s inside one child), and `explain` seconds per image inside one child.

The model: `--model RUN`, else the bundled default model, else a quick one trained here with
final.yaml (one head-only epoch: the right architecture, untrained weights do not change speed).
It is copied to a temporary folder and exported to .tflite there (float, and int8 calibrated on
`--data`) if it lacks an export.

    python benchmarks/predict_speed.py [--model RUN] [--data DIR] [--repeats 3] [--images 1000]
    python benchmarks/predict_speed.py --trunk [--trunk-engines litert,keras] [--explain-images 16]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, MELANOMA, REPO, emit, run_child

from melanoma_cli.runtime.run_folder import RunFolder

BUNDLED = REPO / "melanoma_cli" / "default_model"
ENGINES = ("litert", "keras")  # cold start
BATCH_ENGINES = ("litert-int8", "litert", "keras")  # batch throughput
BATCH = 64
SHARED_TRUNK = Path(__file__).resolve().parent / "shared_trunk.py"
TRUNK_VARIANTS = ("shared_trunk", "two_backbones", "single_lite0")  # as shared_trunk.py writes them


def quick_model(data: Path, folder: Path) -> Path:
    """A final.yaml model after one head-only epoch (no rebalancing): the real architecture."""
    run = folder / "quick"
    stages = "train.stages=[{epochs: 1, learning_rate: 0.001, trainable: head}]"
    run_child([*MELANOMA, "train", "--config", "final.yaml", "--data", str(data), "--out", str(run),
               "--set", "rebalance.enabled=false", "--set", stages, "--json"])
    return run


def working_copy(model: Path, folder: Path, calibration: Path) -> tuple[Path, dict[str, Any] | None]:
    """Copy the run's model files to `folder`; export float and int8 .tflite there if missing
    (int8 calibrated on `calibration`, no equivalence report: speed does not depend on it)."""
    run = folder / "model"
    run.mkdir()
    source_files, copy = RunFolder(model), RunFolder(run)
    info = json.loads(source_files.info.read_text())
    exports = info.get("exports", {})
    for source in [source_files.model, source_files.info, *(model / name for name in exports.values())]:
        if source.is_dir():
            shutil.copytree(source, run / source.name)
        elif source.is_file():
            shutil.copy2(source, run / source.name)
    summary = None
    if not (run / exports["tflite"] if "tflite" in exports else copy.export("tflite")).is_file():
        child = run_child([*MELANOMA, "export", "--model", str(run), "--json"])
        summary = {**json.loads(child.stdout), "wall_s": round(child.wall_s, 1),
                   "peak_rss_mb": child.peak_rss_mb}
    if not copy.export("tflite", "int8").is_file():
        info_file = copy.info
        info = json.loads(info_file.read_text())
        info.get("training", {}).pop("holdout_dirs", None)  # speed only: skip the equivalence report
        info_file.write_text(json.dumps(info))
        run_child([*MELANOMA, "export", "--model", str(run), "--quantize", "int8",
                   "--calibration", str(calibration), "--json"])
    return run, summary


def image_files(data: Path, count: int) -> list[Path]:
    files = sorted(p for p in data.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if len(files) < count:
        raise SystemExit(f"{data} has {len(files)} images, fewer than --images {count}")
    return files[:count]


def linked_folder(files: list[Path], folder: Path) -> Path:
    """A folder of symlinks to `files` (predict reads a folder; the data stays untouched)."""
    folder.mkdir()
    for index, path in enumerate(files):
        (folder / f"{index:05d}{path.suffix}").symlink_to(path.resolve())
    return folder


def cli_start(repeats: int) -> None:
    for args in (["--help"], ["predict", "--help"]):
        walls = [run_child([*MELANOMA, *args]).wall_s for _ in range(repeats)]
        emit("cli_start", command=f"melanoma {' '.join(args)}", wall_s_median=round(median(walls), 3),
             wall_s_min=round(min(walls), 3), repeats=repeats)


def cold_start(model: Path, image: Path, repeats: int) -> None:
    walls: dict[str, list[float]] = {engine: [] for engine in ENGINES}
    rss: dict[str, float] = {}
    for _ in range(repeats):
        for engine in ENGINES:
            child = run_child([*MELANOMA, "predict", str(image), "--model", str(model),
                               "--engine", engine, "--json"])
            walls[engine].append(child.wall_s)
            rss[engine] = max(rss.get(engine, 0.0), child.peak_rss_mb)
    for engine in ENGINES:
        emit("predict_cold_start", engine=engine, images=1, wall_s_median=round(median(walls[engine]), 3),
             wall_s_min=round(min(walls[engine]), 3), peak_rss_mb=rss[engine], repeats=repeats)
    emit("predict_cold_start_ratio",
         keras_over_litert=round(median(walls["keras"]) / median(walls["litert"]), 1))


def batch_child(model: Path, folder: Path, engine: str) -> dict[str, Any]:
    """Inside one process: decode rate, model rate, and predict_files end to end."""
    from melanoma_cli.data.images import decode_many
    from melanoma_cli.inference.prediction import expand_inputs, predict_files
    from melanoma_cli.runtime.loading import load_classifier

    files = expand_inputs([folder])
    classifier = load_classifier(model, engine)  # type: ignore[arg-type]
    started = time.perf_counter()
    batches = [decode_many(files[i:i + BATCH], classifier.image_size)[0]
               for i in range(0, len(files), BATCH)]
    decode_s = time.perf_counter() - started
    classifier.predict(batches[0])  # warm-up: first-call allocation and tracing
    started = time.perf_counter()
    for images in batches:
        classifier.predict(images)
    model_s = time.perf_counter() - started
    started = time.perf_counter()
    count = sum(1 for _ in predict_files(classifier, files, BATCH))
    total_s = time.perf_counter() - started
    return {"engine": engine, "images": count, "decode_img_per_s": round(count / decode_s, 1),
            "model_img_per_s": round(count / model_s, 1),
            "decode_and_model_img_per_s": round(count / total_s, 1)}


def batch_throughput(model: Path, folder: Path, images: int) -> None:
    for path in folder.iterdir():  # page cache warm for every engine, not only the later ones
        path.read_bytes()
    rates = {}
    for engine in BATCH_ENGINES:
        cli = run_child([*MELANOMA, "predict", str(folder), "--model", str(model), "--engine", engine,
                         "--json", "--batch-size", str(BATCH)])
        inside = run_child([sys.executable, __file__, "--child-batch", engine, "--model", str(model),
                            "--data", str(folder)]).last_json()
        rates[engine] = {"model": inside["model_img_per_s"], "cli": images / cli.wall_s}
        emit("predict_batch", **inside, cli_wall_s=round(cli.wall_s, 1),
             cli_img_per_s=round(images / cli.wall_s, 1), cli_peak_rss_mb=cli.peak_rss_mb)
    emit("predict_batch_ratio", int8_over_float_model=round(
        rates["litert-int8"]["model"] / rates["litert"]["model"], 2),
        int8_over_float_cli=round(rates["litert-int8"]["cli"] / rates["litert"]["cli"], 2))


def explain_child(model: Path, folder: Path, count: int) -> dict[str, Any]:
    """Inside one process: Grad-CAM seconds per image (batches of 8, after one warm-up batch)."""
    from melanoma_cli.data.images import decode_many
    from melanoma_cli.inference.explain import explain_images, load_explainer
    from melanoma_cli.inference.prediction import expand_inputs

    files = expand_inputs([folder])[:count]
    explainer = load_explainer(model)
    images = decode_many(files, explainer.keras.image_size)[0]
    explain_images(explainer, images[:8], files[:8])
    started = time.perf_counter()
    for start in range(0, len(images), 8):
        explain_images(explainer, images[start:start + 8], files[start:start + 8])
    return {"images": len(images), "s_per_image": round((time.perf_counter() - started) / len(images), 4)}


def trunk_comparison(source: Path, folder: Path, images_folder: Path, images: int, repeats: int,
                     engines: list[str], explain_count: int) -> None:
    """Shared trunk vs two backbones vs one Lite0, same weights, alternating in every round."""
    run_child([sys.executable, str(SHARED_TRUNK), str(source), "--variants", str(folder)])
    for variant in TRUNK_VARIANTS:
        child = run_child([*MELANOMA, "export", "--model", str(folder / variant), "--json"])
        exported = json.loads(child.stdout)
        emit("trunk_export", variant=variant, size_bytes=exported["size_bytes"],
             max_abs_diff=exported["max_abs_diff"], wall_s=round(child.wall_s, 1))
    for path in images_folder.iterdir():
        path.read_bytes()
    for engine in engines:
        cli: dict[str, list[float]] = {v: [] for v in TRUNK_VARIANTS}
        model: dict[str, list[float]] = {v: [] for v in TRUNK_VARIANTS}
        rss: dict[str, float] = {}
        for _ in range(repeats):
            for variant in TRUNK_VARIANTS:
                run = folder / variant
                child = run_child([*MELANOMA, "predict", str(images_folder), "--model", str(run), "--engine",
                                   engine, "--json", "--batch-size", str(BATCH)])
                cli[variant].append(images / child.wall_s)
                rss[variant] = max(rss.get(variant, 0.0), child.peak_rss_mb)
                inside = run_child([sys.executable, __file__, "--child-batch", engine, "--model", str(run),
                                    "--data", str(images_folder)]).last_json()
                model[variant].append(inside["model_img_per_s"])
        for variant in TRUNK_VARIANTS:
            emit("trunk_predict", variant=variant, engine=engine, images=images, repeats=repeats,
                 cli_img_per_s=round(median(cli[variant]), 1),
                 model_img_per_s=round(median(model[variant]), 1), cli_peak_rss_mb=rss[variant])
        emit("trunk_predict_ratio", engine=engine, **{
            f"shared_over_{other}_{what}": round(median(rates["shared_trunk"]) / median(rates[other]), 2)
            for other in ("two_backbones", "single_lite0")
            for what, rates in (("cli", cli), ("model", model))})
    explain: dict[str, list[float]] = {v: [] for v in TRUNK_VARIANTS}
    for _ in range(repeats):
        for variant in TRUNK_VARIANTS:
            explain[variant].append(run_child([
                sys.executable, __file__, "--child-explain", str(explain_count), "--model",
                str(folder / variant), "--data", str(images_folder)]).last_json()["s_per_image"])
    for variant in TRUNK_VARIANTS:
        emit("trunk_explain", variant=variant, images=explain_count, repeats=repeats,
             s_per_image=round(median(explain[variant]), 4))
    emit("trunk_explain_ratio", two_backbones_over_shared=round(
        median(explain["two_backbones"]) / median(explain["shared_trunk"]), 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="run folder (default: the bundled model)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--child-batch", choices=BATCH_ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--skip-cold", action="store_true", help="batch throughput only")
    parser.add_argument("--trunk", action="store_true",
                        help="shared trunk vs two backbones vs one Lite0 (instead of the above)")
    parser.add_argument("--trunk-engines", default="litert,keras", help="engines for --trunk")
    parser.add_argument("--explain-images", type=int, default=16, help="images explained per --trunk round")
    parser.add_argument("--child-explain", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_batch:
        print(json.dumps(batch_child(args.model, args.data, args.child_batch)))
        return
    if args.child_explain:
        print(json.dumps(explain_child(args.model, args.data, args.child_explain)))
        return
    with tempfile.TemporaryDirectory(prefix="predict-bench-") as tmp:
        folder = Path(tmp)
        source = args.model or (BUNDLED if RunFolder(BUNDLED).info.is_file() else None)
        source = source or quick_model(args.data, folder)
        files = image_files(args.data, args.images)
        if args.trunk:
            images = linked_folder(files, folder / "images")
            trunk_comparison(source, folder / "variants", images, args.images, args.repeats,
                             args.trunk_engines.split(","), args.explain_images)
            return
        model, exported = working_copy(source, folder, args.data)
        if exported:
            emit("export", model=str(source), **exported)
        if not args.skip_cold:
            cli_start(max(args.repeats, 5))
            cold_start(model, files[0], args.repeats)
        batch_throughput(model, linked_folder(files, folder / "images"), args.images)


if __name__ == "__main__":
    main()
