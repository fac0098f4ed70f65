"""The Gradio app: drop images, get per image the top classes, the melanoma flag and a heat map.

Uploads are deleted as soon as they are answered (unanswered ones by Gradio's cache cleaning,
after 2 to 3 minutes), and Gradio's temporary folder is a private one removed when the server
stops (unless GRADIO_TEMP_DIR names one). Nothing is sent anywhere:
Gradio's analytics are off and the page binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from types import ModuleType
from typing import Any

from melanoma_cli.data.images import Unreadable
from melanoma_cli.inference.explain import Explainer, explain_files
from melanoma_cli.utils.errors import MelanomaError, first_line
from melanoma_cli.utils.notice import DISCLAIMER
from melanoma_cli.web.page import answer_html, explanation_html, unreadable_html

INSTALL_HINT = 'pip install ".[web]" in a checkout of melanoma-cli'
MAX_FILE_SIZE = "50mb"  # per upload; Gradio refuses larger files with a message in the page
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def import_gradio() -> ModuleType:
    """Gradio, with its usage analytics off; a one-line error naming the extra when missing."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError as exc:
        raise MelanomaError(f"the web page needs Gradio: {INSTALL_HINT}") from exc
    return gradio


def _discard(upload: Path) -> None:
    """Delete an uploaded file, and the folder Gradio made for it once empty."""
    with suppress(OSError):
        upload.unlink(missing_ok=True)
    with suppress(OSError):  # not empty, or already gone
        upload.parent.rmdir()


def answer(explainer: Explainer, uploads: Sequence[str] | None) -> str:
    """The HTML answer for uploaded files (readable or not); the uploads are deleted afterwards."""
    files = [Path(upload) for upload in uploads or []]
    if not files:
        return answer_html([])
    try:
        sections = {}
        for item in explain_files(explainer, files):
            if isinstance(item, Unreadable):
                sections[files.index(item.path)] = unreadable_html(item.path.name, item.reason)
            else:
                path = item.prediction.path
                sections[files.index(path)] = explanation_html(path.name, item)
        return answer_html([sections[index] for index in sorted(sections)])
    except Exception as exc:  # a page must answer, whatever went wrong with one request
        return answer_html([unreadable_html(", ".join(f.name for f in files), first_line(exc))])
    finally:
        for upload in files:
            _discard(upload)


def build_app(explainer: Explainer) -> Any:
    """The Blocks: the decision-aid notice, an upload box answered on upload, and the answer.

    The upload box is emptied with each answer, since its files are deleted.
    """
    gr = import_gradio()
    classifier = explainer.classifier
    threshold = classifier.melanoma_threshold
    rule = "melanoma is the most probable class" if threshold is None else f"p(melanoma) >= {threshold:.3g}"
    tta = " Probabilities and heat maps are averaged over 8 flips and rotations." if explainer.tta else ""
    with gr.Blocks(title="melanoma-cli", analytics_enabled=False, delete_cache=(60, 120)) as app:
        gr.Markdown(f"## Dermoscopic lesion classifier\n**{DISCLAIMER}**\n\n"
                    f"{len(classifier.classes)} classes, {classifier.image_size} px; a lesion is flagged "
                    f"when {rule}. Heat maps (Grad-CAM of layer `{explainer.layer}`) show which pixels "
                    f"moved the model's score: they are not a diagnosis nor a lesion outline.{tta}")
        files = gr.File(file_count="multiple", label="Dermoscopic images (drop or pick one or more)")
        result = gr.HTML(elem_id="result")
        files.upload(lambda uploads: (answer(explainer, uploads), None), files, [result, files],
                     api_name="classify")
    return app


def check_port(host: str, port: int) -> None:
    """Refuse, before anything is loaded, an address that cannot be listened on."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.bind(address)
    except OSError as exc:
        busy = getattr(exc, "errno", None) == errno.EADDRINUSE
        reason = "it is in use" if busy else first_line(exc)
        raise MelanomaError(f"cannot serve on {host}:{port}: {reason} (choose another port with "
                            "--port)") from exc


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def serve(explainer: Explainer, host: str, port: int) -> None:
    """Run the page until Ctrl-C or SIGTERM (one request at a time: the model is not shared
    between threads)."""
    signal.signal(signal.SIGTERM, _interrupt)  # stop as on Ctrl-C, so that the temp folder goes
    private = None if os.environ.get("GRADIO_TEMP_DIR") else tempfile.mkdtemp(prefix="melanoma-serve-")
    if private is not None:
        os.environ["GRADIO_TEMP_DIR"] = private
    try:
        app = build_app(explainer).queue(default_concurrency_limit=1)
        try:
            app.launch(server_name=host, server_port=port, max_file_size=MAX_FILE_SIZE, quiet=True,
                       share=False, ssr_mode=False, enable_monitoring=False, mcp_server=False)
        except OSError as exc:
            raise MelanomaError(f"cannot serve on {host}:{port}: {first_line(exc)} (choose another "
                                "port with --port)") from exc
    finally:
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)
