"""The ``llm4rec`` command: a thin shell over the library."""

from __future__ import annotations

import sys
import traceback

import typer

from llm4rec.cli.data_cmd import data_app
from llm4rec.cli.embed_cmd import embed_command
from llm4rec.cli.evaluate_cmd import evaluate_command
from llm4rec.cli.ope_cmd import ope_command
from llm4rec.cli.quickstart_cmd import quickstart_command
from llm4rec.cli.simulate_cmd import simulate_command
from llm4rec.errors import Llm4recError

app = typer.Typer(
    name="llm4rec",
    help="Language models inside recommender systems: load data, evaluate honestly, compare models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data")
app.command("evaluate")(evaluate_command)
app.command("embed")(embed_command)
app.command("ope")(ope_command)
app.command("quickstart")(quickstart_command)
app.command("simulate")(simulate_command)

_state = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    """llm4rec: run `llm4rec quickstart` for a first look, `llm4rec COMMAND --help` for details."""
    _state["debug"] = debug


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app; print llm4rec errors as one paragraph, exit code 2."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        code = app(args=args, standalone_mode=False, prog_name="llm4rec")
    except Llm4recError as exc:
        if debug:
            traceback.print_exc()
        typer.echo(f"error: {exc}", err=True)
        return 2
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except Exception as exc:  # noqa: BLE001 - last line of defence: no traceback without --debug
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return exc.exit_code
        if isinstance(exc, click.exceptions.Abort):
            return 1
        if debug:
            traceback.print_exc()
        else:
            typer.echo(f"error: unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
                       err=True)
        return 1
    return code if isinstance(code, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
