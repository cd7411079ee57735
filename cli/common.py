"""What every `galaxy` command shares: one-line user errors, and the parsers of repeated option formats."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import TYPE_CHECKING

import typer

from model.errors import UserError

if TYPE_CHECKING:  # the CLI imports nothing heavy until a command runs: `galaxy --help` stays instant
    from tasks.registry import ModelRef


def user_errors(fn: Callable) -> Callable:
    """Turn UserError into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


def parse_settings(items: list[str] | None) -> dict:
    """--set key=value pairs -> dict with values parsed as JSON where possible (numbers, booleans, lists)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise UserError("--set", f"{item!r} is not key=value")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
        if isinstance(out[key], list):
            out[key] = tuple(out[key])
    return out


def parse_classes(text: str) -> list[int]:
    """'5,6,7' or class names ('barred spiral') -> class ids; 'none' or -1 means unconditional."""
    from model.galaxy10 import CLASS_NAMES

    out = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        if item.lower() in ("none", "-1", "uncond", "unconditional"):
            out.append(-1)
        elif item.lstrip("-").isdigit() and 0 <= int(item) < len(CLASS_NAMES):
            out.append(int(item))
        elif item.lower() in CLASS_NAMES:
            out.append(CLASS_NAMES.index(item.lower()))
        else:
            raise UserError("--classes", f"unknown class {item!r}: use 0-{len(CLASS_NAMES) - 1}, a class name, or none")
    if not out:
        raise UserError("--classes", "no class given")
    return out


def echo_model(ref: ModelRef, name: str) -> None:
    """The registered model's URI, with a note when an identical finished run was reused."""
    if ref.already_complete:
        typer.echo(f"run {ref.run_id} had already finished: nothing new trained or registered")
    typer.echo(f"model {ref.model_uri} (newest: models:/{name}/latest, best: models:/{name}@champion)")
