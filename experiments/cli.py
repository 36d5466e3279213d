"""``diffdyn``: list, run and report experiments.

    diffdyn list
    diffdyn run EXPERIMENT [--preset quick|paper] [--out DIR] [--FIELD VALUE ...]
    diffdyn scan EXPERIMENT --grid FIELD=V1,V2,... [--grid ...] [--seeds N] [--out DIR] [--resume]
                 [--chunk-size N] [--max-memory 2GB] [--FIELD VALUE ...]
    diffdyn report DIR

Any field of the experiment's ``Config`` can be overridden (``--num-modes 16``,
``--q 0.1,0.5``). Bad input prints one line naming the field and exits with status 2 before
anything is compiled or written.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path

from dynamics import sweep
from dynamics.validation import ConfigError, require_choice
from experiments import EXPERIMENTS, get, io


def parse_overrides(config_type: type, tokens: list[str]) -> dict:
    """``["--num-modes", "16", "--q=0.1,0.5"]`` -> ``{"num_modes": 16, "q": (0.1, 0.5)}``."""
    hints = typing.get_type_hints(config_type)
    fields = {f.name for f in dataclasses.fields(config_type)}
    overrides, index = {}, 0
    while index < len(tokens):
        token = tokens[index]
        if not token.startswith("--"):
            raise ConfigError(f"arguments: expected --FIELD VALUE, got {token!r}")
        name, _, value = token[2:].partition("=")
        if not _:
            if index + 1 >= len(tokens):
                raise ConfigError(f"{name}: missing value")
            value = tokens[index + 1]
            index += 1
        index += 1
        field = name.replace("-", "_")
        if field not in fields:
            raise ConfigError(f"{field}: unknown field; allowed: {', '.join(sorted(fields))}")
        overrides[field] = _convert(field, hints[field], value)
    return overrides


def _convert(field: str, kind, text: str):
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        parts = [part for part in text.split(",") if part.strip()]
        if not parts:
            raise ConfigError(f"{field}: needs at least one value")
        return tuple(_convert(field, item, part.strip()) for part in parts)
    try:
        if kind is bool:
            return {"true": True, "false": False}[text.lower()]
        return kind(text)
    except (ValueError, KeyError):
        raise ConfigError(f"{field}: expected {getattr(kind, '__name__', kind)}, got {text!r}") from None


def build_config(experiment, preset: str, tokens: list[str]):
    config = experiment.PRESETS[require_choice("preset", preset, experiment.PRESETS)]
    config = dataclasses.replace(config, **parse_overrides(type(config), tokens))
    return experiment.validate(config)


def command_list(_args) -> int:
    for name in EXPERIMENTS:
        experiment = get(name)
        headline = (experiment.__doc__ or "").strip().splitlines()[0]
        print(f"{name:<20} {headline}  [presets: {', '.join(experiment.PRESETS)}]")
    return 0


def command_run(args, tokens: list[str]) -> int:
    experiment = get(args.experiment)
    config = build_config(experiment, args.preset, tokens)
    out = Path(args.out or Path("runs") / args.experiment)
    print(f"running {args.experiment} (preset {args.preset}) -> {out}", file=sys.stderr)
    with io.run_directory(out) as staging:
        dataset = experiment.run(config)
        summary = experiment.summary(dataset, config)
        io.write_dataset(staging / "results.nc", dataset)
        io.write_json(staging / "config.json", {"experiment": args.experiment, "preset": args.preset, **dataclasses.asdict(config)})
        io.write_json(staging / "summary.json", summary)
        io.write_text(staging / "summary.md", experiment.summary_markdown(summary))
        for name, figure in experiment.plot(dataset, config).items():
            io.save_figure(staging / f"{name}.png", figure)
    print((out / "summary.md").read_text())
    return 0


def command_scan(args, tokens: list[str]) -> int:
    """A grid x seeds sweep as one vmapped program per shape (:mod:`dynamics.sweep`)."""
    experiment = get(args.experiment)
    if not hasattr(experiment, "scan_workload"):
        capable = [name for name in EXPERIMENTS if hasattr(get(name), "scan_workload")]
        raise ConfigError(f"experiment: {args.experiment} cannot be scanned; scan-capable: {', '.join(capable)}")
    if args.coordinator or args.num_processes > 1:
        import jax

        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    config = build_config(experiment, args.preset, tokens)
    grid = dict(sweep.parse_grid_option(option) for option in args.grid)
    if len(grid) != len(args.grid):
        raise ConfigError("grid: a field is given twice")
    out = Path(args.out or Path("runs") / f"{args.experiment}-scan")
    result = sweep.sweep(
        experiment, config, grid, seeds=args.seeds, root_seed=getattr(config, "seed", 0), out=out,
        chunk_size=args.chunk_size, max_memory=args.max_memory, resume=args.resume,
    )
    if result.dataset is None:  # not process 0 of a multi-process sweep
        return 0
    io.write_json(out / "config.json", {"experiment": args.experiment, "preset": args.preset, **dataclasses.asdict(config)})
    io.write_json(out / "summary.json", result.summary)
    io.write_text(out / "summary.md", sweep.summary_markdown(result.summary))
    print(f"scanned {args.experiment} over {', '.join(grid)} x {args.seeds} seeds -> {out}", file=sys.stderr)
    print(sweep.summary_markdown(result.summary))
    if result.summary["diverged"]:
        print(f"diffdyn: {result.summary['diverged']} of {result.summary['runs']} runs diverged (NaN/inf); masked in results.nc (variable diverged)", file=sys.stderr)
    return 0


def command_report(args) -> int:
    path = Path(args.dir) / "summary.md"
    if not path.is_file():
        raise ConfigError(f"dir: no summary.md in {args.dir}")
    print(path.read_text())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="diffdyn", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list experiments")
    run = commands.add_parser("run", help="run an experiment; extra --FIELD VALUE override its config")
    run.add_argument("experiment")
    run.add_argument("--preset", default="quick")
    run.add_argument("--out", default=None, help="output directory (default runs/EXPERIMENT)")
    scan = commands.add_parser("scan", help="sweep a grid of config values x seeds in one vmapped program per shape")
    scan.add_argument("experiment")
    scan.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2,...", help="values of a numeric field (repeatable)")
    scan.add_argument("--seeds", type=int, default=1, help="seeds per grid point (run key fold_in(key(seed), s))")
    scan.add_argument("--preset", default="quick")
    scan.add_argument("--out", default=None, help="output directory (default runs/EXPERIMENT-scan)")
    scan.add_argument("--resume", action="store_true", help="finish an interrupted sweep in --out")
    scan.add_argument("--chunk-size", type=int, default=None, help="runs per program call (default: fit --max-memory)")
    scan.add_argument("--max-memory", default=None, help="bytes per device for one chunk, e.g. 2GB (default: from the device)")
    scan.add_argument("--coordinator", default=None, help="HOST:PORT of process 0 for a multi-process (jax.distributed) sweep")
    scan.add_argument("--num-processes", type=int, default=1)
    scan.add_argument("--process-id", type=int, default=0)
    report = commands.add_parser("report", help="print the summary of a finished run")
    report.add_argument("dir")
    args, tokens = parser.parse_known_args(argv)
    try:
        if args.command not in ("run", "scan") and tokens:
            raise ConfigError(f"arguments: unexpected {' '.join(tokens)}")
        if args.command == "list":
            return command_list(args)
        if args.command == "report":
            return command_report(args)
        if args.command == "scan":
            return command_scan(args, tokens)
        return command_run(args, tokens)
    except ConfigError as error:
        print(f"diffdyn: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
