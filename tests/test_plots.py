"""The figures: what the confusion matrix shows, and that files are written whole."""

from __future__ import annotations

from melanoma_cli.utils import plots


def test_confusion_matrix_shows_counts_and_row_rates(tmp_path, monkeypatch):
    shown: list[dict] = []
    save = plots._save

    def spy(figure, path):
        shown.extend({"title": axis.get_title(), "cells": [t.get_text() for t in axis.texts],
                      "x": [t.get_text() for t in axis.get_xticklabels()],
                      "axes": (axis.get_xlabel(), axis.get_ylabel())} for axis in figure.axes)
        save(figure, path)

    monkeypatch.setattr(plots, "_save", spy)
    plots.plot_confusion_matrix([[2, 1, 0], [0, 0, 0], [1, 0, 3]], ["melanoma", "nevus", "other"],
                                tmp_path / "confusion_matrix.png")
    labels, axes = ["melanoma", "nevus", "other"], ("predicted", "true")
    assert shown == [
        {"title": "counts", "cells": ["2", "1", "0", "0", "0", "0", "1", "0", "3"], "x": labels,
         "axes": axes},
        {"title": "row-normalised (recall)", "x": labels, "axes": axes,  # an empty row stays 0
         "cells": ["0.67", "0.33", "0.00", "0.00", "0.00", "0.00", "0.25", "0.00", "0.75"]},
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["confusion_matrix.png"]  # no temp file left
    assert (tmp_path / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
