"""Run a model on studies in a PACS and store the results back (DICOMweb)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dxkit.errors import ConfigError

app = typer.Typer(no_args_is_help=True)
console = Console()


@app.command("run")
def run(
    model: Annotated[Path, typer.Argument(help="Checkpoint (.ckpt) or exam bundle.")],
    url: Annotated[str, typer.Option(help="DICOMweb root, e.g. http://host:8042/dicom-web")],
    study: Annotated[str | None, typer.Option(help="Study Instance UID to read.")] = None,
    since: Annotated[
        str | None, typer.Option(help="All studies from this date on (YYYY-MM-DD).")
    ] = None,
    accession: Annotated[str | None, typer.Option(help="Studies with this accession.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each PACS answer.")] = 30,
    attempts: Annotated[int, typer.Option(help="Tries per PACS request (with backoff).")] = 4,
) -> None:
    """Retrieve the studies, run the model on the series it reads, store SR (+ SEG / SC)
    into each study. Studies this model version already reported on are skipped."""
    from dxkit.pacs.client import PacsClient, hashed
    from dxkit.pacs.inference import PacsModel
    from dxkit.pacs.run import run_study

    if not (study or since or accession):
        raise ConfigError("choose studies with --study UID, --since DATE or --accession NUMBER")
    pacs_model = PacsModel(model)
    client = PacsClient(url, timeout=timeout, attempts=attempts)
    studies = client.find_studies(study=study, since=since, accession=accession)
    if not studies:
        raise ConfigError(f"no study in the PACS at {url} matches the selection")
    table = Table("study (hashed UID)", "result", "objects stored", "skipped instances")
    for uid in studies:
        outcome = run_study(client, pacs_model, uid)
        detail = outcome.detail or ", ".join(outcome.stored)
        table.add_row(hashed(uid), outcome.status, detail, str(len(outcome.skipped)))
    console.print(table)
