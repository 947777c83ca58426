"""The ``llm4rec`` command: a thin shell over the library."""

from __future__ import annotations

import sys
import traceback

import typer
from typer import _click

from llm4rec.cli.compress_cmd import compress_command
from llm4rec.cli.data_cmd import data_app
from llm4rec.cli.embed_cmd import embed_command
from llm4rec.cli.evaluate_cmd import evaluate_command
from llm4rec.cli.ope_cmd import ope_command
from llm4rec.cli.quickstart_cmd import quickstart_command
from llm4rec.cli.recommend_cmd import recommend_command
from llm4rec.cli.run_cmd import run_command
from llm4rec.cli.serve_cmd import events_app, keys_app, publish_command, serve_command
from llm4rec.cli.simulate_cmd import simulate_command
from llm4rec.cli.tune_cmd import tune_command
from llm4rec.errors import Llm4recError

#: exit status after Ctrl-C (128 + SIGINT), as shells report it
INTERRUPTED = 130

app = typer.Typer(
    name="llm4rec",
    help="Language models inside recommender systems: load data, evaluate honestly, compare models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},  # inherited by every command
)
app.add_typer(data_app, name="data")
app.command("evaluate")(evaluate_command)
app.command("embed")(embed_command)
app.command("ope")(ope_command)
app.command("quickstart")(quickstart_command)
app.command("simulate")(simulate_command)
app.command("tune")(tune_command)
app.command("recommend")(recommend_command)
app.command("compress")(compress_command)
app.command("run")(run_command)
app.command("serve")(serve_command)
app.command("publish")(publish_command)
app.add_typer(keys_app, name="keys")
app.add_typer(events_app, name="events")


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    """llm4rec: run `llm4rec quickstart` for a first look, `llm4rec COMMAND --help` for details."""


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app and return the exit status.

    llm4rec errors print as one paragraph (status 2); usage errors print the
    usage line and the error (status 2); Ctrl-C prints "interrupted" (130).
    """
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        code = app(args=args, standalone_mode=False, prog_name="llm4rec")
    except Llm4recError as exc:
        if debug:
            traceback.print_exc()
        typer.echo(f"error: {exc}", err=True)
        return 2
    except _click.exceptions.NoArgsIsHelpError:  # the help is already printed, as click does
        return 2
    except _click.exceptions.ClickException as exc:  # usage errors: bad or missing options, bad values
        exc.show()
        return exc.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 1
    except KeyboardInterrupt:  # outside the command (typer turns one inside it into exit status 130)
        code = INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - last line of defence: no traceback without --debug
        if debug:
            traceback.print_exc()
        else:
            typer.echo(f"error: unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
                       err=True)
        return 1
    if code == INTERRUPTED:
        typer.echo("interrupted", err=True)
    return code if isinstance(code, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
