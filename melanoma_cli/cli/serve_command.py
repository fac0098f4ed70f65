"""`melanoma serve`: the local web page (Gradio, from the `web` extra)."""

from __future__ import annotations

from typing import Annotated

import typer

from melanoma_cli.cli.common import KerasModelOption, TTAOption, announce_model, err, handle_errors, warn


@handle_errors
def serve(
    model: KerasModelOption = None,
    host: Annotated[str, typer.Option(
        "--host", metavar="ADDRESS",
        help="Address to listen on. The default serves this machine only: the page "
             "handles medical images.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(
        "--port", min=1, max=65535, metavar="PORT", help="Port to listen on.")] = 7860,
    tta: TTAOption = False,
) -> None:
    """Serve a local web page: drop images, see top classes, the melanoma flag and a heat map."""
    from melanoma_cli.inference.explain import load_explainer
    from melanoma_cli.web.app import LOOPBACK, check_port, import_gradio
    from melanoma_cli.web.app import serve as run

    check_port(host, port)
    if host not in LOOPBACK:
        warn(f"listening on {host}: anyone who can reach this machine on port {port} can upload "
             "images and read the results (there is no login and no encryption)")
    import_gradio()
    explainer = load_explainer(model, tta=tta)
    announce_model(explainer.classifier, explainer.classifier.melanoma_threshold, as_json=True)
    shown = f"[{host}]" if ":" in host else host
    err.print(f"serving on http://{shown}:{port} (Ctrl-C to stop)", highlight=False, markup=False)
    run(explainer, host, port)
