"""The `galaxy` command line: data, training, atlas, sampling, sweeps and evaluation.

Every command honours MLFLOW_TRACKING_URI. Problems a user can fix print one line on stderr and exit 2;
anything else is a bug and keeps its traceback. Each command group lives in its own module.
"""

from __future__ import annotations

import sys

import typer

from cli import data, evaluate, explore, sweep, train

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.splitlines()[0])
app.add_typer(data.app, name="data")
app.add_typer(train.app, name="train")
app.command("atlas")(explore.atlas_cmd)
app.command("sample")(explore.sample_cmd)
app.command("sweep")(sweep.sweep_cmd)
app.command("sweep-worker", hidden=True)(sweep.sweep_worker_cmd)
app.command("evaluate")(evaluate.evaluate_cmd)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
