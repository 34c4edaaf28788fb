"""Checks of a command's file arguments, made before any work."""

from __future__ import annotations

import os
from pathlib import Path

import typer


def refuse_overwriting_input(input_path: Path, output: Path, option: str = "--output") -> None:
    """Exit 2 when ``output`` is ``input_path`` itself (the input would be lost) or a directory."""
    if output.exists() and input_path.exists() and output.resolve() == input_path.resolve():
        typer.echo(f"error: {option} {output} is the input file; it would be overwritten", err=True)
        raise typer.Exit(2)
    if output.is_dir():
        typer.echo(f"error: {option} {output} is a directory; give a file path", err=True)
        raise typer.Exit(2)


def check_creatable(path: Path, option: str) -> None:
    """Exit 2 unless folder ``path`` exists or can be made: its nearest existing ancestor must be a
    writable folder. Checked before any work, and nothing is created, so a refused or failed run leaves
    no empty folder behind (the command creates it when it writes)."""
    absolute = path.absolute()
    existing = next(p for p in (absolute, *absolute.parents) if p.exists())
    if existing == absolute and not existing.is_dir():
        reason = f"{existing} is a file, not a folder"
    elif existing != absolute and not (existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)):
        reason = f"cannot create its folder under {existing} (not a writable folder)"
    else:
        return
    typer.echo(f"error: {option} {path}: {reason}", err=True)
    raise typer.Exit(2)
