"""``kgworker demo``: a book becomes a graph page with one command, on any machine.

An LLM provider is used instead of the ``rules`` extractor when ``KG_DEMO_API_KEY`` is set:
``KG_DEMO_PROVIDER`` (default ``deepseek``), ``KG_DEMO_BASE_URL`` and ``KG_DEMO_MODEL``
(both optional for providers kgworker knows). These are read here only, so they can
never change what a worker node does.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Annotated

import typer

ENV_PREFIX = "KG_DEMO_"


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_command(
        novel: Annotated[
            Path | None,
            typer.Option("--novel", help="Book directory: book.json + chapter files "
                         "(default: the sample novel).", file_okay=False, exists=True),
        ] = None,
        out: Annotated[Path, typer.Option("--out", help="Where to write the graph page.")] = Path(
            "graph.html"
        ),
        open_page: Annotated[
            bool, typer.Option("--open", help="Open the page in a browser at the end.")
        ] = False,
        data_dir: Annotated[
            Path | None,
            typer.Option("--data-dir", help="Keep the SQLite stores here (default: temporary)."),
        ] = None,
        slots: Annotated[int, typer.Option(min=1, max=16, help="Worker slots.")] = 3,
        as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    ) -> None:
        """Process a sample novel end to end on embedded stores; write graph.html.

        Set KG_DEMO_API_KEY (and KG_DEMO_PROVIDER, KG_DEMO_BASE_URL, KG_DEMO_MODEL) to
        extract with an LLM provider instead of the rules extractor.
        """
        from rich.console import Console

        from kgworker.demo.embedded import EmbeddedServerError
        from kgworker.demo.runner import DemoOptions, LLMChoice, print_summary, run_demo

        llm = None
        key = os.environ.get(f"{ENV_PREFIX}API_KEY", "").strip()
        if key:
            llm = LLMChoice(
                provider=os.environ.get(f"{ENV_PREFIX}PROVIDER", "").strip() or "deepseek",
                api_key=key,
                base_url=os.environ.get(f"{ENV_PREFIX}BASE_URL", "").strip() or None,
                model=os.environ.get(f"{ENV_PREFIX}MODEL", "").strip() or None,
            )
        options = DemoOptions(novel_dir=novel, out=out, data_dir=data_dir, llm=llm, slots=slots)
        console = Console(stderr=as_json)
        try:
            result = asyncio.run(run_demo(options, console, dict(os.environ)))
        except (EmbeddedServerError, FileNotFoundError, ValueError, KeyError) as exc:
            typer.echo(f"demo: {exc}", err=True)
            raise typer.Exit(2) from None
        if as_json:
            typer.echo(json.dumps(result.summary, ensure_ascii=False, indent=2))
        else:
            print_summary(console, result.summary)
        if open_page:
            import webbrowser

            webbrowser.open(Path(result.summary["graph_html"]).as_uri())
        raise typer.Exit(result.exit_code)
