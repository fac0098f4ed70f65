"""Prediction speed: cold start for one image and batch throughput, Keras vs LiteRT engines.

Every measurement of `melanoma ...` is a fresh child process (what a user or a script sees),
alternating engines so both see the same machine load:
  - `melanoma --help` and `melanoma predict --help` wall time;
  - cold start: `melanoma predict ONE.jpg --engine keras|litert --json` wall time and peak RSS;
  - batch: `melanoma predict` over `--images` (1,000) files per engine (litert-int8, litert,
    keras): wall time and peak RSS, plus, inside one child per engine, decode and model img/s
    measured apart; and the int8 / float ratios.

The model: `--model RUN`, else the bundled default model, else a quick one trained here with
final.yaml (one head-only epoch: the right architecture, untrained weights do not change speed).
It is copied to a temporary folder and exported to .tflite there (float, and int8 calibrated on
`--data`) if it lacks an export.

    python benchmarks/predict_speed.py [--model RUN] [--data DIR] [--repeats 3] [--images 1000]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="run folder (default: the bundled model)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--child-batch", choices=BATCH_ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--skip-cold", action="store_true", help="batch throughput only")
    args = parser.parse_args()
    if args.child_batch:
        print(json.dumps(batch_child(args.model, args.data, args.child_batch)))
        return
    with tempfile.TemporaryDirectory(prefix="predict-bench-") as tmp:
        folder = Path(tmp)
        source = args.model or (BUNDLED if RunFolder(BUNDLED).info.is_file() else None)
        source = source or quick_model(args.data, folder)
        model, exported = working_copy(source, folder, args.data)
        if exported:
            emit("export", model=str(source), **exported)
        files = image_files(args.data, args.images)
        if not args.skip_cold:
            cli_start(max(args.repeats, 5))
            cold_start(model, files[0], args.repeats)
        batch_throughput(model, linked_folder(files, folder / "images"), args.images)


if __name__ == "__main__":
    main()
