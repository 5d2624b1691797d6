"""The ``saeinverse`` command line. User errors print one line and exit 2, with no traceback."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence

from saeinverse.artifacts import STAGES
from saeinverse.errors import SaeInverseError, one_line

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str) -> Callable:
    """Register a subcommand handler (names are unique)."""

    def register(handler: Callable[[argparse.Namespace], int]) -> Callable:
        if name in COMMANDS:
            raise ValueError(f"command {name!r} registered twice")
        COMMANDS[name] = handler
        return handler

    return register


def _config(args: argparse.Namespace):
    from saeinverse.config import get_default_config, load_config, parse_overrides, update_config

    config = load_config(args.config) if args.config else get_default_config()
    return update_config(config, parse_overrides(args.overrides))


STAGE_COMMANDS = {spec.name: spec.help for spec in STAGES if spec.help}
"""Each runs the pipeline up to and including that stage, reusing finished stages."""


@command("run")
def _run(args: argparse.Namespace) -> int:
    from saeinverse.run.pipeline import run_experiment

    until = args.command if args.command in STAGE_COMMANDS else None
    ctx = run_experiment(
        _config(args), force=args.force, run_dir=args.run_dir, until=until, wait=args.wait
    )
    print(f"run directory: {ctx.run.root}")
    for name, stage_hash in ctx.hashes.items():
        print(f"  {name:<8} done  {ctx.run.stage_dir(name)}  (hash {stage_hash})")
    return 0


for _name in STAGE_COMMANDS:
    COMMANDS[_name] = _run


@command("train-sae")
def _train_sae(args: argparse.Namespace) -> int:
    from saeinverse.models.from_config import train_default_sae

    config = _config(args)
    _, quality = train_default_sae(config, out_dir=args.out)
    print(json.dumps(quality.to_dict(), indent=2))
    return 0


@command("config")
def _config_show(args: argparse.Namespace) -> int:
    from saeinverse.config import dump_config

    print(dump_config(_config(args)), end="")
    return 0


@command("report")
def _report(args: argparse.Namespace) -> int:
    from saeinverse.report import build_report

    print(build_report(args.run_dir))
    return 0


@command("export")
def _export(args: argparse.Namespace) -> int:
    from saeinverse.export import export_run

    summary = export_run(args.run_dir, args.to, args.out_dir)
    print(json.dumps(summary, indent=2))
    return 0


@command("config-keys")
def _config_keys(args: argparse.Namespace) -> int:
    from saeinverse.config.docs import config_reference

    print(config_reference(), end="")
    return 0


@command("models")
def _models(args: argparse.Namespace) -> int:
    from saeinverse.models.loading import available_models

    for entry in available_models():
        print(json.dumps(entry))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: one subcommand per stage plus run, train-sae, config and models."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="YAML config file (partial trees keep the defaults)")
    common.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. data.n_prompts=200")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    parser = argparse.ArgumentParser(prog="saeinverse", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    whole = {"run": "run the whole pipeline (the stages switched on in the pipeline section)"}
    for name, text in {**whole, **STAGE_COMMANDS}.items():
        run = sub.add_parser(name, parents=[common], help=text)
        run.add_argument(
            "--force",
            action="append",
            default=[],
            metavar="STAGE",
            help="recompute STAGE ('all': every stage)",
        )
        run.add_argument("--run-dir", help="run directory (default: <output.dir>/<output.name>)")
        run.add_argument(
            "--wait",
            action="store_true",
            help="wait for another run using the same run directory (default: refuse)",
        )
    train = sub.add_parser(
        "train-sae", parents=[common], help="train the default TopK SAE (sae.train.*)"
    )
    train.add_argument("--out", help="output directory (default: the user cache)")
    config = sub.add_parser("config", help="show the resolved config")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    config_sub.add_parser("show", parents=[common], help="print the resolved config as YAML")
    config_sub.add_parser("keys", help="print every config key with its default and meaning")
    sub.add_parser("models", parents=[common], help="list what is available offline")
    report = sub.add_parser("report", help="rebuild RUN_DIR's report.html from its saved artifacts")
    report.add_argument("run_dir")
    export = sub.add_parser("export", help="write RUN_DIR's features in another tool's format")
    export.add_argument("run_dir")
    export.add_argument("--to", required=True, help="the format (neuronpedia)")
    export.add_argument("out_dir", help="output directory")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``saeinverse`` and ``python -m saeinverse`` (no arguments: ``run``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        argv = ["run"]
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("httpx", "urllib3", "huggingface_hub", "datasets", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        name = "config-keys" if getattr(args, "config_command", None) == "keys" else args.command
        return COMMANDS[name](args)
    except SaeInverseError as err:
        print(f"saeinverse: error: {one_line(err, limit=2000)}", file=sys.stderr)
        return 2
    except OSError as err:  # a read-only filesystem, a full disk, a path that is a file
        if getattr(args, "verbose", False):
            raise
        print(f"saeinverse: error: {one_line(err, limit=2000)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("saeinverse: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
