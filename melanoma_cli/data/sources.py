"""Data sources: a folder per class, or a folder of images with a labels CSV.

A folder holding `labels.csv` beside `images/` is a CSV source without further settings; any
other folder is read as one subfolder per class. Listing a source reads no image: it yields
(path, label, group) entries, and problems with the CSV itself are one-line errors naming the
file and row.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from melanoma_cli.config import SourceConfig
from melanoma_cli.data.images import Unreadable
from melanoma_cli.utils.errors import MelanomaError

LABELS_FILE = "labels.csv"
IMAGES_DIR = "images"


@dataclass(frozen=True)
class Entry:
    """One labelled image file of a source, not yet read."""

    path: Path
    label: str
    source: str
    group: str | None = None
    row: int | None = None  # its row in a labels CSV (header = row 1)


@dataclass
class SourceListing:
    """What listing a source found: its entries and what it passed over."""

    name: str
    root: Path
    kind: Literal["folders", "csv"]
    entries: list[Entry]
    nested: list[Path] = field(default_factory=list)  # folders inside class folders (never swept in)
    loose: list[Path] = field(default_factory=list)  # files beside the class folders
    unreadable: list[Unreadable] = field(default_factory=list)  # folders and non-files met on the way
    skipped_rows: int = 0  # CSV rows whose label maps to None


def parse_source(text: str) -> SourceConfig:
    """A `--data` argument: `PATH` or `NAME=PATH`."""
    name, sep, path = text.partition("=")
    if sep and name and not Path(text).exists():
        return SourceConfig(path=path, name=name)
    return SourceConfig(path=text)


def source_name(spec: SourceConfig) -> str:
    """The source's name: its own, else its folder's (or the CSV file's stem)."""
    if spec.name:
        return spec.name
    path = Path(spec.path)
    return path.stem if path.suffix.lower() == ".csv" else path.absolute().name


def is_csv_source(path: Path) -> bool:
    """A labels CSV, or a folder with labels.csv beside images/."""
    if path.suffix.lower() == ".csv":
        return True
    return (path / LABELS_FILE).is_file() and (path / IMAGES_DIR).is_dir()


def check_folder(root: Path, what: str = "data folder") -> None:
    """A readable folder, or a one-line error saying what is wrong with it."""
    if not root.exists():
        detail = "is a broken or looping link" if root.is_symlink() else "does not exist"
        raise MelanomaError(f"{what} '{root}' {detail}")
    if not root.is_dir():
        raise MelanomaError(f"'{root}' is a file, expected a folder of class subfolders or a labels CSV")
    if not os.access(root, os.R_OK | os.X_OK):
        raise MelanomaError(f"{what} '{root}' cannot be read (permission denied)")


def list_class_folders(root: Path) -> list[Path]:
    """The class subfolders of a dataset root, sorted by name; errors if there are none."""
    check_folder(root)
    try:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as exc:
        raise MelanomaError(f"data folder '{root}' cannot be read: {exc.strerror}") from exc
    if not folders:
        raise MelanomaError(f"data folder '{root}' has no class subfolders (expected "
                            f"{root}/<class>/<image files>, or {LABELS_FILE} beside {IMAGES_DIR}/)")
    return folders


def list_folder_source(root: Path, name: str) -> SourceListing:
    """Entries of a folder-per-class tree; nested folders and loose files are reported."""
    folders = list_class_folders(root)
    listing = SourceListing(name, root, "folders", [])
    listing.loose = sorted(p for p in root.iterdir() if not p.is_dir() and not p.name.startswith("."))
    for folder in folders:
        try:
            children = sorted(folder.iterdir())
        except OSError as exc:
            listing.unreadable.append(Unreadable(folder, f"class folder cannot be read: {exc.strerror}"))
            continue
        for child in children:
            if child.name.startswith("."):
                continue
            if child.is_dir():
                listing.nested.append(child)
            elif child.is_file() or child.is_symlink():  # a bad link is reported when it is read
                listing.entries.append(Entry(child, folder.name, name))
            else:
                listing.unreadable.append(Unreadable(child, "not a regular file"))
    return listing


def _csv_paths(spec: SourceConfig) -> tuple[Path, Path]:
    """(labels file, image folder) of a CSV source."""
    path = Path(spec.path)
    if path.suffix.lower() == ".csv":
        images = path.parent / spec.images
        return path, images if images.is_dir() else path.parent
    check_folder(path)
    return path / spec.labels, path / spec.images


def _read_rows(labels_file: Path, columns: list[str]) -> list[dict[str, str]]:
    try:
        with labels_file.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            missing = [c for c in columns if c not in header]
            if missing:
                raise MelanomaError(f"labels file '{labels_file}' has no column "
                                    f"{', '.join(repr(c) for c in missing)} (columns: {', '.join(header)})")
            return list(reader)
    except FileNotFoundError as exc:
        raise MelanomaError(f"labels file '{labels_file}' does not exist") from exc
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MelanomaError(f"labels file '{labels_file}' cannot be read: {exc}") from exc


def list_csv_source(spec: SourceConfig, name: str) -> SourceListing:
    """Entries of a labels CSV; a missing file, empty label or bad row names the row."""
    labels_file, images = _csv_paths(spec)
    columns = [spec.file_column, spec.label_column]
    if spec.group_column:
        columns.append(spec.group_column)
    group_required = spec.group_column is not None and spec.group_column != "group"
    rows = _read_rows(labels_file, columns if group_required else columns[:2])
    listing = SourceListing(name, images, "csv", [])
    seen: dict[str, int] = {}
    for number, row in enumerate(rows, start=2):  # row 1 is the header
        where = f"labels file '{labels_file}' row {number}"
        file, label = (row.get(spec.file_column) or "").strip(), (row.get(spec.label_column) or "").strip()
        if not file or not label:
            raise MelanomaError(f"{where}: empty '{spec.file_column if not file else spec.label_column}'")
        if file in seen:
            raise MelanomaError(f"{where}: '{file}' is listed twice (first at row {seen[file]})")
        seen[file] = number
        if label in spec.label_map:
            mapped = spec.label_map[label]
            if mapped is None:
                listing.skipped_rows += 1
                continue
            label = mapped
        path = images / file
        if not (path.is_file() or path.is_symlink()):
            raise MelanomaError(f"{where}: image '{path}' does not exist")
        group = (row.get(spec.group_column) or "").strip() or None if spec.group_column else None
        listing.entries.append(Entry(path, label, name, group, number))
    return listing


def list_source(spec: SourceConfig) -> SourceListing:
    """List one source of either format."""
    name = source_name(spec)
    path = Path(spec.path)
    if is_csv_source(path) or spec.labels != LABELS_FILE:
        return list_csv_source(spec, name)
    return list_folder_source(path, name)


def list_sources(specs: list[SourceConfig], classes: list[str] | None = None) -> list[SourceListing]:
    """List every source; names must be unique and labels known when `classes` is given."""
    if not specs:
        raise MelanomaError("no training data given (use --data, or data.sources in the config)")
    listings = [list_source(spec) for spec in specs]
    names = [listing.name for listing in listings]
    for name in names:
        if names.count(name) > 1:
            raise MelanomaError(f"two data sources are named '{name}': name them (--data NAME=PATH, "
                                "or data.sources[].name)")
    if classes is not None:  # class folders are checked against data.classes as a whole, later
        for listing in (listing for listing in listings if listing.kind == "csv"):
            unknown = sorted({e.label for e in listing.entries} - set(classes))
            if unknown:
                first = next(e for e in listing.entries if e.label in unknown)
                raise MelanomaError(f"source '{listing.name}' ({listing.root}) has label(s) not in "
                                    f"data.classes: {', '.join(repr(u) for u in unknown)} (first at "
                                    f"row {first.row}, '{first.path.name}')")
    return listings
