"""Copies of one picture form one cluster; clusters and lesions form the units a split never cuts."""

from __future__ import annotations

from pathlib import Path

import pytest

from melanoma_cli.data.dedupe import THUMBNAIL_TOLERANCE, THUMBNAIL_VALUES, clean_images
from melanoma_cli.data.scan import ImageFile


def record(name: str, label: str = "melanoma", *, source: str = "a", sha: str | None = None,
           phash: str | None = None, thumb: int = 100, size: int = 24, group: str | None = None) -> ImageFile:
    """A scanned image as `clean_images` sees it: its bytes' hash defaults to one of its own."""
    return ImageFile(path=Path(source) / name, label=label, sha256=sha or f"sha-{source}-{name}",
                     width=size, height=size, mode="RGB", format="PNG", phash=phash,
                     thumbnail=bytes([thumb]) * THUMBNAIL_VALUES if phash else None,
                     source=source, group=group)


def chained_images() -> list[ImageFile]:
    """a=b by bytes, b=c by ISIC id, c=d by perceptual hash and thumbnail: one picture four times.

    e's hash is as close to d's but its thumbnail differs: another lesion that looks alike. f is
    the same lesion as a (one source's group), g has the same group name in another source.
    """
    close = THUMBNAIL_TOLERANCE + 1
    return [
        record("x1.png", sha="same-bytes", group="L1"),
        record("ISIC_0000001.png", source="b", sha="same-bytes"),
        record("ISIC_0000001_small.jpg", source="c", phash="00000000000000f0", size=40),
        record("d.png", source="c", phash="00000000000000f3"),
        record("e.png", source="c", phash="00000000000000f1", thumb=int(100 + close)),
        record("f.png", group="L1"),
        record("g.png", source="b", group="L1"),
    ]


def names(groups: list[list[ImageFile]]) -> list[list[str]]:
    """File names, group by group (units come sorted by path: source folder first)."""
    return [[i.path.name for i in group] for group in groups]


def test_copies_join_through_any_chain_of_links_and_lesions_join_their_clusters():
    cleaned = clean_images(chained_images(), max_distance=4)
    assert names(cleaned.units) == [["f.png", "ISIC_0000001_small.jpg"], ["g.png"], ["e.png"]]
    assert cleaned.totals() == {"images": 7, "kept": 4, "duplicates": 3, "conflicts": 0, "holdout": 0}
    assert cleaned.counts["c"] == {"images": 3, "kept": 2, "duplicates": 1, "conflicts": 0, "holdout": 0}


def test_without_perceptual_matching_the_hash_link_is_not_made():
    cleaned = clean_images(chained_images(), max_distance=None)
    assert names(cleaned.units) == [["f.png", "ISIC_0000001_small.jpg"], ["g.png"], ["d.png"], ["e.png"]]
    assert cleaned.totals()["duplicates"] == 2


@pytest.mark.parametrize("drop_conflicts", [True, False])
def test_conflicting_clusters_are_listed_in_the_order_of_their_first_image(drop_conflicts):
    images = [
        record("p.png", "nevus", sha="second"), record("q.png", "melanoma", sha="first"),
        record("r.png", "nevus", sha="first"), record("s.png", "melanoma", sha="second", size=30),
        record("t.png", "nevus"),
    ]
    cleaned = clean_images(images, drop_conflicts=drop_conflicts)
    assert names(cleaned.conflicts) == [["s.png", "p.png"], ["q.png", "r.png"]]  # the kept copy first
    if drop_conflicts:
        assert names(cleaned.units) == [["t.png"]]
        assert cleaned.dropped_by_class == {"nevus": 2, "melanoma": 2}
    else:  # one copy per label, each conflict on one side of the split
        assert names(cleaned.units) == [["p.png", "s.png"], ["q.png", "r.png"], ["t.png"]]


def test_no_images_clean_to_nothing():
    cleaned = clean_images([], max_distance=4)
    assert cleaned.units == [] and cleaned.conflicts == [] and cleaned.counts == {}
