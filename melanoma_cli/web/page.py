"""The HTML of the web page's answer: per image the top classes, the melanoma flag, the heat map."""

from __future__ import annotations

import base64
from html import escape

from melanoma_cli.inference.explain import Explanation, flag_text, render_png
from melanoma_cli.utils.notice import DISCLAIMER

STYLE = """<style>
.lesion {border: 1px solid #ccc; border-radius: 8px; padding: 12px; margin-bottom: 14px;}
.lesion h3 {margin: 0 0 6px 0;}
.flag {font-weight: bold; padding: 2px 6px; border-radius: 4px;}
.flag.yes {background: #b00020; color: white;}
.flag.no {background: #e8f0e8; color: #1b5e20;}
.unreadable {color: #b00020;}
.lesion table td {padding: 1px 10px 1px 0;}
.lesion img {max-width: 100%;}
.notice {font-style: italic; color: #555;}
</style>"""


def explanation_html(name: str, explanation: Explanation) -> str:
    """One image's answer: name, flag with p(melanoma) and threshold, top classes, heat map figure."""
    prediction = explanation.prediction
    flag = ""
    if prediction.melanoma_flag is not None:
        kind = "yes" if prediction.melanoma_flag else "no"
        flag = f'<p><span class="flag {kind}">{escape(flag_text(explanation))}</span></p>'
    rows = "".join(f"<tr><td>{escape(label)}</td><td>{p:.3f}</td></tr>" for label, p in prediction.top_k)
    figure = base64.b64encode(render_png(explanation)).decode("ascii")
    return (f'<section class="lesion" data-flag="{str(prediction.melanoma_flag).lower()}">'
            f"<h3>{escape(name)}</h3>{flag}<table>{rows}</table>"
            f'<img alt="Grad-CAM heat map of {escape(name)}" src="data:image/png;base64,{figure}"></section>')


def unreadable_html(name: str, reason: str) -> str:
    """A file that could not be classified, and why."""
    return (f'<section class="lesion unreadable" data-flag="none"><h3>{escape(name)}</h3>'
            f"<p>Not classified: {escape(reason)}.</p></section>")


def answer_html(sections: list[str]) -> str:
    """The whole answer: the sections, then the decision-aid notice."""
    return f'{STYLE}{"".join(sections)}<p class="notice">{escape(DISCLAIMER)}</p>'
