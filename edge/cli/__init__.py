"""The ``leukoedge`` command line: a thin click layer over the library.

Subcommands are imported only when they run, so ``leukoedge --help`` and ``leukoedge classify``
start fast and never import TensorFlow; ``train``, ``evaluate``, ``quantize`` and ``report`` need
the ``[train]`` extra and say so when it is missing.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from leukoedge import __version__
from leukoedge.errors import LeukoEdgeError, RuntimeMissingError

#: name -> (module:attribute, one-line help). The help is here so that ``--help`` imports nothing.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("leukoedge.train.cli:train_cmd", "Train LeukoNet on labelled single-cell images."),
    "prepare-lmu": (
        "leukoedge.train.cli:prepare_lmu_cmd",
        "Write the LMU differential data set (aml-lmu + lmu-thumbs) as a grouped CSV manifest.",
    ),
    "evaluate": ("leukoedge.train.cli:evaluate_cmd", "Evaluate a trained Keras model on labelled images."),
    "quantize": ("leukoedge.quantize.cli:quantize_cmd", "Convert a trained model to an int8 TFLite bundle."),
    "report": ("leukoedge.quantize.cli:report_cmd", "Compare float and int8 models on held-out images."),
    "classify": ("leukoedge.cli.classify:classify_cmd", "Classify single-cell images or whole fields."),
    "models": ("leukoedge.cli.classify:models_cmd", "Show what a model bundle is and how it measured."),
    "synth": ("leukoedge.cli.synth:synth_cmd", "Generate synthetic cells, fields and stage sequences."),
    "daemon": ("leukoedge.cli.daemon:daemon_cmd", "Run the microscope daemon (capture, detect, count)."),
    "session": ("leukoedge.cli.daemon:session_group", "Start, stop, list, show and export sessions."),
    "config": ("leukoedge.cli.daemon:config_group", "Check a daemon configuration file."),
    "demo": ("leukoedge.cli.daemon:demo_cmd", "Run the daemon on the synthetic microscope for a while."),
    "bench": ("leukoedge.cli.bench:bench_cmd", "Measure inference, detection and pipeline speed here."),
}


#: Packages only the training extra brings; commands that need them say how to install them.
TRAINING_MODULES = ("tensorflow", "keras", "matplotlib")
#: Command modules that need the training extra.
TRAINING_PACKAGES = ("leukoedge.train.", "leukoedge.quantize.")


def _installed(module: str) -> bool:
    from importlib.util import find_spec

    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):
        return False


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when that subcommand is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        target, _ = COMMANDS[cmd_name]
        module_name, attr = target.split(":")
        if module_name.startswith(TRAINING_PACKAGES) and not _installed("tensorflow"):
            # say so before any work is done (training decodes its data before importing Keras)
            return _missing_extra_command(cmd_name, "tensorflow")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and e.name.split(".")[0] in TRAINING_MODULES:
                return _missing_extra_command(cmd_name, e.name)
            raise
        return getattr(module, attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


class _MissingExtraError(click.ClickException):
    """A command that needs an extra which is not installed: the exit status of a missing runtime."""

    exit_code = RuntimeMissingError.exit_code


def _missing_extra_command(name: str, module: str) -> click.Command:
    @click.command(name=name, context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def missing(args: tuple[str, ...]) -> None:
        raise _MissingExtraError(
            f"'leukoedge {name}' needs {module}, which is not installed. "
            "Install the training extra: pip install 'leukoedge[train]'"
        )

    return missing


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="leukoedge")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """Find AML blasts among white blood cells in peripheral blood smear images.

    Typical workflow: train -> quantize -> report -> classify -> daemon.
    Run 'leukoedge COMMAND --help' for each command's options.

    Research use only - not a medical device. Results are not a diagnosis and
    must be reviewed by a qualified person.
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def main(argv: list[str] | None = None) -> None:
    """Console entry point: library errors become a one-line message and the error's exit status."""
    try:
        rv = cli.main(args=argv, prog_name="leukoedge", standalone_mode=False)
        # without standalone mode, click returns the status given to ctx.exit(n)
        if isinstance(rv, int) and rv != 0:
            sys.exit(rv)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except LeukoEdgeError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(e.exit_code)
    except ModuleNotFoundError as e:
        if not (e.name and e.name.split(".")[0] in TRAINING_MODULES):
            raise
        click.echo(
            f"Error: this command needs {e.name}, which is not installed. "
            "Install the training extra: pip install 'leukoedge[train]'",
            err=True,
        )
        sys.exit(RuntimeMissingError.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
