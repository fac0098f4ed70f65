"""`melanoma env`: versions, devices and platform, for a bug report."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from melanoma_cli.cli.common import JsonOption, handle_errors, out, print_json, warn


@handle_errors
def env(as_json: JsonOption = False) -> None:
    """Show package versions, the devices TensorFlow sees, LiteRT and the platform (paste it into a
    bug report)."""
    from melanoma_cli.runtime.environment import environment, warnings

    summary = environment()
    if as_json:
        print_json(summary)
    else:
        table = Table(show_header=False, title="melanoma env")
        table.add_column("field", no_wrap=True)
        table.add_column("value", overflow="fold")
        for name, version in summary["versions"].items():
            table.add_row(name, version or "not installed")
        table.add_row("tensorflow packages", ", ".join(f"{name} {version}" for name, version
                                                       in summary["tensorflow_distributions"].items()))
        table.add_section()
        for device in summary["devices"]:
            extra = ", ".join(str(part) for part in (device["description"], device["compute_capability"]
                                                     and f"compute {device['compute_capability']}") if part)
            table.add_row(device["type"], escape(device["name"] + (f" ({extra})" if extra else "")))
        if "cuda_build" in summary:
            table.add_row("CUDA build", f"CUDA {summary['cuda']}, cuDNN {summary['cudnn']}"
                          if summary["cuda_build"] else "no (CPU only)")
        table.add_row("LiteRT", "available" if summary["litert_available"] else "not installed")
        table.add_section()
        platform = summary["platform"]
        table.add_row("platform", escape(f"{platform['system']} ({platform['machine']}, "
                                         f"{platform['cpus']} CPUs)"))
        out.print(table)
    for message in warnings(summary):
        warn(message)
