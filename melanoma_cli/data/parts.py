"""Splitting one labelled source into parts by lesion: e.g. a clinic's sample to adapt on and a
part to judge on, or an outside set's selection part and report part.

A part keeps every image of a lesion (`group`) together; parts are stratified by class and seeded.
The assignment is a small CSV (`file`, `part`: file names only, no labels or pixels), so a split can
be committed and reproduced exactly. Each part is written as a labels CSV source with absolute image
paths, usable wherever a source is (`--data`, `--holdout`, `evaluate`, `adapt`).
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from melanoma_cli.config import SourceConfig
from melanoma_cli.data.sources import Entry, list_source
from melanoma_cli.utils.atomic import write_text
from melanoma_cli.utils.errors import MelanomaError

PARTS_FILE = "parts.csv"


def stratified_group_split(units: Sequence, labels: Sequence[str], fraction: float, seed: int,
                           where: str) -> tuple[list, list]:
    """(rest, `fraction` of the units), stratified by `labels`, one label per unit."""
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(list(units), test_size=fraction, random_state=seed, stratify=list(labels))
    except ValueError as exc:
        raise MelanomaError(f"cannot split {where} {fraction:.0%}: {exc}") from exc


def lesions(entries: Sequence[Entry], pattern: str | None = None) -> list[list[Entry]]:
    """The entries grouped by lesion: `group` (an image without one is its own lesion); with
    `pattern`, images whose file names give the same first match group are one lesion too."""
    by_group: dict[str, list[Entry]] = {}
    for entry in entries:
        by_group.setdefault(_lesion_key(entry, pattern), []).append(entry)
    return list(by_group.values())


def _lesion_key(entry: Entry, pattern: str | None) -> str:
    if pattern is not None:
        match = re.search(pattern, entry.path.name)
        if match and match.groups() and match.group(1):
            return "name:" + match.group(1)
    return "group:" + (entry.group or str(entry.path))


def draw_parts(entries: Sequence[Entry], fraction: float, seed: int, names: tuple[str, str],
               where: str, pattern: str | None = None) -> dict[str, str]:
    """File name -> part: `fraction` of the lesions go to names[0], the rest to names[1]."""
    units = lesions(entries, pattern)
    mixed = [unit for unit in units if len({e.label for e in unit}) > 1]
    if mixed:
        raise MelanomaError(f"{where}: lesion of '{mixed[0][0].path.name}' has images with different labels")
    rest, chosen = stratified_group_split(units, [unit[0].label for unit in units], fraction, seed, where)
    return {e.path.name: name for name, part in zip(names, (chosen, rest), strict=True)
            for unit in part for e in unit}


def read_parts(path: Path) -> dict[str, str]:
    """A parts CSV: file name -> part; one-line errors naming the file and row."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if not {"file", "part"} <= set(reader.fieldnames or []):
                raise MelanomaError(f"parts file '{path}' needs the columns 'file' and 'part'")
            parts: dict[str, str] = {}
            for number, row in enumerate(reader, start=2):
                file, part = (row["file"] or "").strip(), (row["part"] or "").strip()
                if not file or not part:
                    empty = "file" if not file else "part"
                    raise MelanomaError(f"parts file '{path}' row {number}: empty '{empty}'")
                if file in parts:
                    raise MelanomaError(f"parts file '{path}' row {number}: '{file}' is listed twice")
                parts[file] = part
    except FileNotFoundError as exc:
        raise MelanomaError(f"parts file '{path}' does not exist") from exc
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MelanomaError(f"parts file '{path}' cannot be read: {exc}") from exc
    return parts


def check_parts(parts: dict[str, str], entries: Sequence[Entry], path: Path, where: str,
                pattern: str | None = None) -> None:
    """The parts file covers exactly the source's files, and keeps each lesion in one part."""
    files = {e.path.name for e in entries}
    missing, extra = sorted(files - parts.keys()), sorted(parts.keys() - files)
    if missing or extra:
        what = f"has no row for '{missing[0]}'" if missing else f"lists '{extra[0]}', which is not in it"
        raise MelanomaError(f"parts file '{path}' does not match {where}: it {what} "
                            f"({len(missing)} missing, {len(extra)} unknown)")
    for unit in lesions(entries, pattern):
        if len({parts[e.path.name] for e in unit}) > 1:
            raise MelanomaError(f"parts file '{path}' puts images of one lesion ('{unit[0].path.name}') "
                                "in different parts")


def write_parts(entries: Sequence[Entry], parts: dict[str, str], out: Path) -> dict[str, Path]:
    """Write `out`/parts.csv and one labels CSV per part; the part name -> its CSV."""
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / PARTS_FILE, _csv(["file", "part"], sorted(parts.items())))
    written = {}
    for part in sorted(set(parts.values())):
        rows = [(str(e.path.absolute()), e.label, e.group or e.path.name)
                for e in entries if parts[e.path.name] == part]
        written[part] = out / f"{part}.csv"
        write_text(written[part], _csv(["file", "label", "group"], rows))
    return written


def _csv(header: list[str], rows: Sequence[Sequence[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def split_source(spec: SourceConfig, out: Path, *, fraction: float, seed: int, names: tuple[str, str],
                 parts_file: Path | None = None, overwrite: bool = False,
                 lesion_pattern: str | None = None) -> dict[str, Any]:
    """Split a labelled source into two parts by lesion (or as `parts_file` says) and write them."""
    listing = list_source(spec)
    where = f"source '{listing.name}' ({spec.path})"
    if not listing.entries:
        raise MelanomaError(f"{where} has no labelled images")
    root = Path(os.path.realpath(listing.root))
    target = Path(os.path.realpath(out))
    if target.is_relative_to(root) or target.is_relative_to(os.path.realpath(spec.path)):
        raise MelanomaError(f"output folder '{out}' is inside {where}; a source is never written to")
    if not overwrite and out.is_dir() and any(out.iterdir()):
        raise MelanomaError(f"output folder '{out}' is not empty (use --overwrite to replace it)")
    if parts_file is not None:
        parts = read_parts(parts_file)
        check_parts(parts, listing.entries, parts_file, where, lesion_pattern)
    else:
        if len(set(names)) != 2:
            raise MelanomaError(f"the two part names must differ (got '{names[0]}' twice)")
        parts = draw_parts(listing.entries, fraction, seed, names, where, lesion_pattern)
    written = write_parts(listing.entries, parts, out)
    members = {part: [e for e in listing.entries if parts[e.path.name] == part] for part in written}
    return {"source": str(spec.path), "out": str(out), "parts_file": str(out / PARTS_FILE),
            "seed": None if parts_file else seed, "from_parts_file": str(parts_file) if parts_file else None,
            "parts": {part: {"labels_csv": str(path), "images": len(members[part]),
                             "lesions": len(lesions(members[part], lesion_pattern)),
                             "classes": dict(sorted(Counter(e.label for e in members[part]).items()))}
                      for part, path in written.items()}}
