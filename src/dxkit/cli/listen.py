"""``dxkit listen``: a DICOM node that receives studies and sends results back."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from dxkit.cli import app

console = Console(stderr=True)


@app.command()
def listen(
    model: Annotated[Path, typer.Argument(help="Checkpoint (.ckpt) or exam bundle.")],
    send_to: Annotated[
        str, typer.Option("--send-to", help="Where results go: AET@HOST:PORT (C-STORE).")
    ],
    aet: Annotated[str, typer.Option(help="This node's AE title.")] = "DXKIT",
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="DICOM port to listen on.")] = 11112,
    quiet: Annotated[
        float, typer.Option(help="Seconds without new instances after which a study is complete.")
    ] = 10.0,
) -> None:
    """Receive studies by C-STORE; when a study has been quiet for --quiet seconds, run the
    model and C-STORE the results to --send-to. Stops on Ctrl-C."""
    from dxkit.pacs.inference import PacsModel
    from dxkit.pacs.listen import Destination, Listener

    listener = Listener(PacsModel(model), Destination.parse(send_to), aet=aet, host=host,
                        port=port, quiet=quiet)  # fmt: skip
    console.print(f"listening as {aet} on {host}:{port}; results to {send_to}")
    listener.serve_forever()
