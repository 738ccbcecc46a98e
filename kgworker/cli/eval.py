"""``kgworker eval``: extraction quality on the gold mini-novel, offline, in seconds."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_command(
        suite: Annotated[
            list[str] | None,
            typer.Option("--suite", "-s", help="clean, format, content, rules (repeatable)."),
        ] = None,
        novel_dir: Annotated[
            Path | None, typer.Option("--novel", help="Directory with book.json and gold.json.")
        ] = None,
        seed: Annotated[int, typer.Option(help="Seed of the fault injector.")] = 1,
        format_rate: Annotated[float, typer.Option(help="Rate of each format fault.")] = 0.1,
        content_rate: Annotated[float, typer.Option(help="Rate of each content fault.")] = 0.3,
        chunk_tokens: Annotated[int, typer.Option(help="Chunk budget in tokens.")] = 1500,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Run the quality suites; exit 1 when a suite is below one of its thresholds.

        Everything ships in the package (the gold novel, the fault injector), so it runs
        from any directory of an installed wheel.
        """
        from kgworker.eval.quality import SUITES, evaluate, render_text

        chosen = tuple(suite or SUITES)
        unknown = [s for s in chosen if s not in SUITES]
        if unknown:
            typer.echo(
                f"unknown suite(s): {', '.join(unknown)}; choose from {', '.join(SUITES)}", err=True
            )
            raise typer.Exit(2)
        try:
            results = asyncio.run(
                evaluate(
                    chosen,
                    novel_dir,
                    seed=seed,
                    format_rate=format_rate,
                    content_rate=content_rate,
                    chunk_tokens=chunk_tokens,
                )
            )
        except (RuntimeError, FileNotFoundError) as exc:
            typer.echo(f"eval: {exc}", err=True)
            raise typer.Exit(2) from None
        if as_json:
            typer.echo(json.dumps([r.summary() for r in results], ensure_ascii=False, indent=1))
        else:
            typer.echo(render_text(results))
        if any(r.failures for r in results):
            raise typer.Exit(1)
