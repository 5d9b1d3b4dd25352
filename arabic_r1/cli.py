"""The ``arabic-r1`` command: one ``cmd_<subcommand>`` function per subcommand, dispatched by argparse."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from arabic_r1.params import ParamsError
from arabic_r1.params_loading import DEFAULT_PROFILE, dump_params, load_params
from arabic_r1.phases import UnknownPhase
from arabic_r1.plan import PlanError


def _add_params_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--params",
        default=DEFAULT_PROFILE,
        help="profile name (smoke, paper, ...) or path to a params YAML (default: smoke)",
    )
    p.add_argument(
        "-o",
        "--override",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted override, e.g. -o train.lora.r=32 (repeatable)",
    )


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--run-dir", type=Path, default=None, help="run folder (default: <run.root>/<run.name or profile>)"
    )
    p.add_argument(
        "--notebooks",
        type=Path,
        default=None,
        help="folder of the numbered notebooks (default: the repo's notebooks/)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arabic-r1",
        description="Reproduce Arabic-DeepSeek-R1 phase by phase (notebooks run with papermill).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    rep = sub.add_parser("reproduce", help="run every phase in order, skipping fresh ones")
    _add_params_args(rep)
    _add_run_args(rep)
    rep.add_argument("--force", action="store_true", help="re-run phases even when fresh")
    rep.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="PHASE",
        help="run only this phase (repeatable; 01, data_mixture, ...)",
    )
    rep.add_argument(
        "--from",
        dest="start_from",
        default=None,
        metavar="PHASE",
        help="re-run this phase and every later one",
    )

    swe = sub.add_parser("sweep", help="several override sets as separate named runs, compared in one table")
    _add_params_args(swe)
    swe.add_argument(
        "-s",
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="'KEY=VALUE ...'",
        help="one run's overrides (repeat for each run), e.g. -s train.lora.r=16 -s train.lora.r=32",
    )
    swe.add_argument("--name", default=None, help="sweep name (default: <run name>-sweep)")
    swe.add_argument(
        "--notebooks", type=Path, default=None, help="folder of the numbered notebooks (default: notebooks/)"
    )

    run = sub.add_parser("run", help="run one phase (always executed; its inputs must exist)")
    run.add_argument("phase", help="00, environment, 00_environment, ...")
    _add_params_args(run)
    _add_run_args(run)

    doc = sub.add_parser("doctor", help="check Python, torch/GPU, Unsloth, lighteval offline readiness, disk")
    _add_params_args(doc)

    ben = sub.add_parser("benchmarks", help="write (from the hub) or check a local OALL v2 benchmark mirror")
    ben.add_argument("action", choices=["check", "mirror"])
    ben.add_argument("--out", type=Path, default=None, help="mirror: the folder to write")
    ben.add_argument(
        "--mirror", type=Path, default=None, help="mirror folder (default: eval.mirror_dir of --params)"
    )
    _add_params_args(ben)

    pla = sub.add_parser("plan", help="estimate GPU memory, tokens, teacher cost and time before running")
    _add_params_args(pla)
    pla.add_argument(
        "--hardware",
        default=None,
        metavar="[Nx]GPU:GIB",
        help="plan for another machine, e.g. T4:15, H100:80, 64xH100:80, cpu:24 (default: the profile's run.hardware, "
        "else this machine)",
    )
    pla.add_argument("--run-dir", type=Path, default=None, help="a run whose phase 01 pool sizes the tokens")

    pre = sub.add_parser(
        "preflight", help="offline: will this profile start on its target machine (run.hardware)?"
    )
    _add_params_args(pre)

    par = sub.add_parser("params", help="show or validate a params file")
    par.add_argument("action", choices=["show", "validate"])
    par.add_argument("file", nargs="?", default=None, help="profile name or YAML path (default: smoke)")
    par.add_argument("-o", "--override", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    for cmd, handler in (
        (rep, cmd_reproduce),
        (swe, cmd_sweep),
        (run, cmd_run),
        (doc, cmd_doctor),
        (ben, cmd_benchmarks),
        (pla, cmd_plan),
        (pre, cmd_preflight),
        (par, cmd_params),
    ):
        cmd.set_defaults(handler=handler)
    return parser


def cmd_params(args: argparse.Namespace) -> int:
    params = load_params(args.file, args.overrides)
    if args.action == "show":
        print(dump_params(params), end="")
    else:
        print(f"{params.source_file}: valid (profile '{params.profile}', run folder {params.run_dir})")
    return 0


def cmd_benchmarks(args: argparse.Namespace) -> int:
    params = load_params(args.params, args.overrides)
    if args.action == "mirror":
        from arabic_r1.oall_tasks import write_mirror_from_hub

        if args.out is None:
            print("error: benchmarks mirror needs --out FOLDER", file=sys.stderr)
            return 2
        counts = write_mirror_from_hub(args.out, list(params.eval.benchmarks))
        print("\n".join(f"{k}: {n} rows" for k, n in counts.items()))
        return 0
    from arabic_r1.benchmark_mirrors import check_mirror

    mirror = args.mirror or params.eval.mirror_dir
    if mirror is None:
        print("error: no mirror folder: pass --mirror or set eval.mirror_dir", file=sys.stderr)
        return 2
    problems = check_mirror(mirror, params.eval.benchmarks)
    for p in problems:
        print(f"- {p}")
    fatal = [p for p in problems if "OALL v2 subsets missing" not in p]
    print(f"{mirror}: {'usable' if not fatal else 'NOT usable'} ({len(problems)} note(s))")
    return 1 if fatal else 0


def cmd_plan(args: argparse.Namespace) -> int:
    from arabic_r1.plan import detect_hardware, make_plan, parse_hardware

    params = load_params(args.params, args.overrides)
    spec = args.hardware or params.run.hardware
    hw = parse_hardware(spec) if spec else detect_hardware(params)
    plan = make_plan(params, hw, args.run_dir or params.run_dir)
    print(plan.table())
    return 3 if plan.problems else 0


def cmd_preflight(args: argparse.Namespace) -> int:
    from arabic_r1.preflight import preflight

    params = load_params(args.params, args.overrides)
    found = preflight(params)
    print("\n".join(f.line() for f in found))
    failed = sum(f.status == "fail" for f in found)
    where = params.run.hardware or "this machine"
    print(f"\n{params.profile} on {where}: " + (f"{failed} problem(s)" if failed else "no problem found"))
    return 1 if failed else 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from arabic_r1.doctor import format_table, run_doctor

    rows = run_doctor(load_params(args.params, args.overrides))
    print(format_table(rows))
    return 1 if any(r.status == "fail" for r in rows) else 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from arabic_r1.pipeline import NOTEBOOKS_DIR
    from arabic_r1.sweep import parse_sets, run_sweep, sweep_file

    params = load_params(args.params, args.overrides)
    runs = run_sweep(
        args.params,
        parse_sets(args.sets),
        args.overrides,
        name=args.name,
        notebooks_dir=args.notebooks or NOTEBOOKS_DIR,
    )
    for r in runs:
        reused = f" (reused {', '.join(r.reused)})" if r.reused else ""
        print(f"{r.name}: {' '.join(r.overrides)}{reused}")
    record = sweep_file(params, args.name or f"{params.run_dir.name}-sweep")
    print(record.with_suffix(".md").read_text(encoding="utf-8"))
    print(f"sweep record: {record}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from arabic_r1.pipeline import NOTEBOOKS_DIR, reproduce

    summary = reproduce(
        load_params(args.params, args.overrides),
        force=args.force,
        only=args.only,
        start_from=args.start_from,
        notebooks_dir=args.notebooks or NOTEBOOKS_DIR,
        run_dir=args.run_dir,
    )
    print(summary.table())
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from arabic_r1.pipeline import NOTEBOOKS_DIR, run_phase

    summary = run_phase(
        load_params(args.params, args.overrides),
        args.phase,
        notebooks_dir=args.notebooks or NOTEBOOKS_DIR,
        run_dir=args.run_dir,
    )
    print(summary.table())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"
    )
    from arabic_r1.pipeline import PhaseFailed
    from arabic_r1.run_owner import RunLocked

    try:
        return args.handler(args)
    except (ParamsError, UnknownPhase, PlanError) as exc:  # the command line or params file is wrong
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    except (PhaseFailed, RunLocked) as exc:  # a phase failed, or another run holds the folder
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
