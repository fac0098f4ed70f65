"""Short, unambiguous class abbreviations for narrow displays (confusion-matrix headers)."""

from __future__ import annotations

KNOWN = {
    "actinic keratosis": "AK",
    "basal cell carcinoma": "BCC",
    "dermatofibroma": "DF",
    "melanoma": "MEL",
    "nevus": "NV",
    "pigmented benign keratosis": "PBK",
    "seborrheic keratosis": "SK",
    "squamous cell carcinoma": "SCC",
    "vascular lesion": "VASC",
}


def _generic(name: str) -> str:
    """Initials of a name of several words, else its first four letters, upper case."""
    words = name.replace("_", " ").replace("-", " ").split()
    if len(words) > 1:
        return "".join(word[0] for word in words).upper()
    return (words[0][:4] if words else "?").upper()


def abbreviations(classes: list[str]) -> dict[str, str]:
    """One distinct abbreviation per class name: the ISIC ones where known, else a generic one."""
    wanted = {name: KNOWN.get(name.strip().lower()) or _generic(name) for name in classes}
    result: dict[str, str] = {}
    taken: set[str] = set()
    for name in classes:
        short, number = wanted[name], 2
        while short in taken:
            short, number = f"{wanted[name]}{number}", number + 1
        result[name] = short
        taken.add(short)
    return result
