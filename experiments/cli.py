"""``diffdyn``: list, run, scan and report studies.

    diffdyn list
    diffdyn run EXPERIMENT [--preset quick|paper|...] [--out DIR] [--FIELD VALUE ...]
    diffdyn scan EXPERIMENT --grid FIELD=V1,V2,... [--grid ...] [--FIELD VALUE ...]
    diffdyn run EXPERIMENT --help        (every field: type, default, allowed values, meaning)
    diffdyn report DIR [--docs docs/studies]   (print a run's summary, write its results page)

``run`` sweeps the study's own grid fields x ``--seeds``; ``scan`` sweeps more fields on top,
through the same engine (chunks, devices, ``--resume``, failure masks). Fields of nested
settings take dotted names (``--tau.num 30``). Bad input prints one line naming the field and
exits with status 2 before anything is compiled or written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from diffdyn.dynamics import config as configs
from diffdyn.dynamics.sweep import parse_grid_option
from diffdyn.dynamics.validation import ConfigError, require_choice
from diffdyn.experiments import EXPERIMENTS, get, report, runner

ENGINE_OPTIONS = {
    "--preset": "named settings to start from (default quick)",
    "--out": "output directory (default runs/EXPERIMENT, runs/EXPERIMENT-scan for scan)",
    "--resume": "finish an interrupted run or scan in --out",
    "--overwrite": "replace what --out holds (run does this by default)",
    "--chunk-size": "runs per program call (default: as many as fit --max-memory)",
    "--max-memory": "bytes per device for one chunk, e.g. 2GB (default: from the device)",
    "--coordinator": "HOST:PORT of process 0 of a multi-process (jax.distributed) sweep",
    "--num-processes": "processes of a multi-process sweep",
    "--process-id": "this process's rank in a multi-process sweep",
}


def parse_overrides(config_type: type, tokens: list[str]) -> dict:
    """``["--num-modes", "16", "--q=0.1,0.5", "--tau.num", "30"]`` -> ``{"num_modes": 16,
    "q": (0.1, 0.5), "tau.num": 30}``, each value converted and checked for its type."""
    overrides, index = {}, 0
    while index < len(tokens):
        token = tokens[index]
        if not token.startswith("--"):
            raise ConfigError(f"arguments: expected --FIELD VALUE, got {token!r}")
        name, has_value, value = token[2:].partition("=")
        if not has_value:
            if index + 1 >= len(tokens):
                raise ConfigError(f"{name.replace('-', '_')}: missing value")
            value = tokens[index + 1]
            index += 1
        index += 1
        info = configs.field_info(config_type, name.replace("-", "_"))
        overrides[info.path] = configs.parse(info, value)
    return overrides


def build_config(study, preset: str, tokens: list[str]):
    """The preset with the command line's field overrides (checked when the sweep is planned)."""
    config = study.PRESETS[require_choice("preset", preset, study.PRESETS)]
    return configs.replace(config, parse_overrides(type(config), tokens))


def field_help(study) -> str:
    """Every field of the study's config: name, type, default, allowed values and meaning."""
    lines = [f"fields of {study.NAME} (defaults: preset quick; grid fields are swept by run):"]
    quick = study.PRESETS["quick"]
    for info in configs.fields(study.Config):
        kind = getattr(info.item, "__name__", str(info.item)) + (",..." if info.is_tuple else "")
        default = configs.get(quick, info.path)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else str(default)
        tags = [tag for tag, on in (("grid", info.grid), ("traced", info.traced)) if on]
        lines.append(
            f"  --{info.path.replace('_', '-'):<28} {kind.upper():<10} default {shown or '(empty)'}; {configs.allowed(info)}"
            + (f" [{', '.join(tags)}]" if tags else "")
        )
        lines.append(f"      {info.doc}")
    return "\n".join(lines)


def engine_parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"diffdyn {command}", add_help=False, allow_abbrev=False)
    parser.add_argument("experiment")
    parser.add_argument("-h", "--help", action="store_true")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--out", default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--max-memory", default=None)
    parser.add_argument("--coordinator", default=None)
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    if command == "scan":
        parser.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2,...")
    return parser


def command_sweep(command: str, argv: list[str]) -> int:
    """``run`` and ``scan``: one code path (:func:`diffdyn.experiments.runner.execute`)."""
    args, tokens = engine_parser(command).parse_known_args(argv)
    study = get(args.experiment)
    if args.help:
        options = ENGINE_OPTIONS | ({"--grid FIELD=V1,V2": "sweep a field over these values (repeatable)"} if command == "scan" else {})
        print(f"usage: diffdyn {command} {study.NAME} [options] [--FIELD VALUE ...]\n\n{(study.__doc__ or '').strip().splitlines()[0]}\n")
        print("options:\n" + "\n".join(f"  {flag:<30} {text}" for flag, text in options.items()) + "\n")
        print(field_help(study))
        return 0
    extra = dict(parse_grid_option(option) for option in getattr(args, "grid", []))
    if command == "scan" and not extra:
        raise ConfigError("grid: give at least one --grid FIELD=V1,V2,... (or use diffdyn run for the study's own grid)")
    if len(extra) != len(getattr(args, "grid", [])):
        raise ConfigError("grid: a field is given twice")
    if args.coordinator or args.num_processes > 1:
        import jax

        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    config = build_config(study, args.preset, tokens)
    out = Path(args.out or Path("runs") / (study.NAME + ("-scan" if command == "scan" else "")))
    result = runner.execute(
        study,
        config,
        extra,
        out=out,
        preset=args.preset,
        resume=args.resume,
        overwrite=args.overwrite or (command == "run" and not args.resume),
        chunk_size=args.chunk_size,
        max_memory=args.max_memory,
    )
    if result.dataset is None:  # not process 0 of a multi-process sweep
        return 0
    print(report.markdown(result.summary))
    print(f"diffdyn {command} {study.NAME} (preset {args.preset}): results in {out}", file=sys.stderr)
    warning = report.failure_line(result.summary["sweep"])
    if warning:
        print(warning, file=sys.stderr)
    return 0


def command_list() -> int:
    for name in EXPERIMENTS:
        study = get(name)
        headline = (study.__doc__ or "").strip().splitlines()[0]
        print(f"{name:<24} {headline}  [presets: {', '.join(study.PRESETS)}]")
    return 0


def command_report(argv: list[str]) -> int:
    """``diffdyn report DIR [--docs docs/studies]``: print a run's summary and write its results
    page ``docs/studies/<study>.md`` (the generated section; hand-written text is kept)."""
    parser = argparse.ArgumentParser(prog="diffdyn report", allow_abbrev=False)
    parser.add_argument("dir")
    parser.add_argument("--docs", default="docs/studies", help="folder of the study pages (default docs/studies)")
    args = parser.parse_args(argv)
    path = Path(args.dir) / "summary.json"
    if not path.is_file():
        raise ConfigError(f"dir: no summary.json in {args.dir} (a diffdyn run or scan directory)")
    print((Path(args.dir) / "summary.md").read_text())
    page = report.study_page(Path(args.dir), Path(args.docs), get(json.loads(path.read_text())["experiment"]))
    print(f"diffdyn report: wrote {page}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="diffdyn", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1]
    )
    parser.add_argument("command", choices=("list", "run", "scan", "report"))
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    try:
        command, rest = argv[0], argv[1:]
        require_choice("command", command, ("list", "run", "scan", "report"))
        if command in ("run", "scan"):
            return command_sweep(command, rest)
        if command == "list":
            if rest:
                raise ConfigError(f"arguments: unexpected {' '.join(rest)}")
            return command_list()
        return command_report(rest)
    except ConfigError as error:
        print(f"diffdyn: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
