"""`melanoma explain`: Grad-CAM heat maps of image files, folders and globs, one PNG per image."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from melanoma_cli.cli.common import (
    JsonOption,
    KerasModelOption,
    ThresholdOption,
    TTAOption,
    announce_model,
    err,
    handle_errors,
    image_progress,
    out,
    print_json,
    warn,
)
from melanoma_cli.utils.notice import DISCLAIMER


@handle_errors
def explain(
    paths: Annotated[list[str], typer.Argument(
        metavar="PATHS", help="Image files, folders (searched recursively) and globs.")],
    out_dir: Annotated[Path, typer.Option(
        "--out", "-o", metavar="DIR",
        help="Folder for the figures (<image name>_gradcam.png); created if missing.")],
    model: KerasModelOption = None,
    layer: Annotated[str | None, typer.Option(
        "--layer", metavar="NAME",
        help="Layer whose feature maps Grad-CAM weighs (default: the last convolution, "
             "also inside a nested backbone).")] = None,
    top_k: Annotated[int, typer.Option(
        "--top-k", "-k", min=1, metavar="K", help="How many classes to list per image.")] = 3,
    threshold: ThresholdOption = None,
    tta: TTAOption = False,
    as_json: JsonOption = False,
) -> None:
    """Draw Grad-CAM heat maps: which pixels moved the model's score for the predicted class (and
    for melanoma when it is not the prediction). Uses the Keras model."""
    from melanoma_cli.data.images import Unreadable
    from melanoma_cli.inference.explain import (
        explain_files,
        load_explainer,
        output_paths,
        prepare_output_dir,
        write_png,
    )
    from melanoma_cli.inference.prediction import expand_inputs, resolve_threshold
    from melanoma_cli.utils.errors import MelanomaError

    files = expand_inputs(paths)
    prepare_output_dir(out_dir, paths, model)
    targets = dict(zip(files, output_paths(files, out_dir), strict=True))
    explainer = load_explainer(model, layer, tta)
    announce_model(explainer.classifier, resolve_threshold(explainer.classifier, threshold), as_json)
    written: list[dict] = []
    skipped: list[Unreadable] = []
    with image_progress("explaining") as hook:
        for item in explain_files(explainer, files, top_k=top_k, threshold=threshold, progress=hook):
            if isinstance(item, Unreadable):
                warn(f"skipped '{item.path}': {item.reason}")
                skipped.append(item)
                continue
            target = targets[item.prediction.path]
            write_png(item, target)
            written.append({**item.prediction.to_dict(), "figure": str(target),
                            "heatmaps": list(item.heatmaps), "blank_heatmaps": item.blank_heatmaps})
    if not written:
        raise MelanomaError(f"none of the {len(files)} file(s) could be read as an image")
    if skipped:
        warn(f"skipped {len(skipped)} unreadable file(s)")
    blank = sum(bool(row["blank_heatmaps"]) for row in written)
    if blank:
        warn(f"{blank} of {len(written)} figure(s) have a blank heat map (no region of layer "
             f"'{explainer.layer}' raised that class's score; \"blank_heatmaps\" in --json): "
             "try another --layer")
    if as_json:
        print_json({"layer": explainer.layer, "tta": tta, "written": written,
                    "skipped": [{"path": str(s.path), "reason": s.reason} for s in skipped]})
    else:
        table = Table(title=f"Grad-CAM of layer {escape(explainer.layer)}")
        table.add_column("image", overflow="fold")
        table.add_column("prediction")
        table.add_column("flag", no_wrap=True)
        table.add_column("figure", overflow="fold")
        for row in written:
            flag = "[bold white on red] MELANOMA FLAG [/]" if row["melanoma_flag"] else ""
            table.add_row(escape(row["path"]), f"{escape(row['prediction'])} {row['probability']:.3f}",
                          flag, escape(row["figure"]))
        out.print(table)
    (err if as_json else out).print(f"[dim]{DISCLAIMER}[/]", highlight=False)
