"""The ``samplax`` command line: thin parsing at the edge, then the library.

  samplax list targets|methods|suites
  samplax run METHOD TARGET [--chains --warmup --samples --seed --out DIR --set key=value ... --resume]
  samplax bench [SUITE] [--out DIR] [--chains N --warmup N --samples N] [--ray [ADDRESS]]
  samplax bench learned [--budget-scale tiny|small|medium]   (learned vs classical at equal evaluations)

A mistake on the command line (unknown name, invalid option, a --resume that does not
match the stored run) is one line on stderr and exit code 2, and leaves no run folder.
  samplax report RUN_DIR
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys


class UsageError(Exception):
    """A mistake in the command line: printed as one line ``samplax CMD: message``, exit code 2."""


def _parse_sets(pairs, flag: str = "--set") -> dict:
    from samplax.core.options import parse_assignments

    try:
        return parse_assignments(pairs, flag)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _default_out(kind: str) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("samplax_runs", f"{kind}-{stamp}")


def cmd_list(args) -> int:
    import samplax

    if args.what == "targets":
        for n in samplax.targets.names():
            print(n)
    elif args.what == "methods":
        from samplax.methods import get_method

        for n in samplax.method_names():
            spec = get_method(n)
            opts = ", ".join(f"{k}={v.default!r}" for k, v in spec.options.items())
            print(f"{n:<22} {spec.description}\n{'':<22} options: {opts or '-'}")
    else:
        from samplax.bench import suite_names

        for n in suite_names():
            print(n)
    return 0


#: the run-length fields of ``samplax run`` (config key, flag, default of a new run)
RUN_FIELDS = (("chains", "--chains", 4), ("warmup", "--warmup", 1000), ("samples", "--samples", 1000),
              ("seed", "--seed", 0))


def _json_value(v):
    """``v`` as it reads back from ``config.json`` (tuples become lists), for comparisons."""
    return json.loads(json.dumps(v, default=str))


def resume_config(stored: dict, given: dict, option_defaults: dict, out: str) -> dict:
    """The configuration a ``--resume`` continues: the stored one (``out/config.json``).

    ``given`` holds what this command line states: ``method``, ``target``, ``target_params``,
    ``options``, ``x64`` and the run-length fields (``None`` where no flag was passed).  A stated
    value that differs from the stored run's is refused (:class:`UsageError` naming every such field),
    so a resume never silently runs another configuration; fields not stated are taken from the
    stored run.  An option stated with its default value matches a stored run that left it out.
    """
    diffs = []
    for key in ("method", "target"):
        if given[key] != stored.get(key):
            diffs.append(f"{key.upper()} {given[key]!r} (the run used {stored.get(key)!r})")
    for flag, key, defaults in (("--target-param", "target_params", {}), ("--set", "options", option_defaults)):
        before = stored.get(key) or {}
        for k, v in given[key].items():
            old = before.get(k, defaults.get(k, "<not set>"))
            if _json_value(v) != _json_value(old):
                diffs.append(f"{flag} {k}={v!r} (the run used {k}={old!r})" if old != "<not set>"
                             else f"{flag} {k}={v!r} (the run did not set {k})")
    for key, flag, _ in RUN_FIELDS:
        if given[key] is not None and given[key] != stored.get(key):
            diffs.append(f"{flag} {given[key]} (the run used {stored.get(key)})")
    if given["x64"] and not stored.get("x64", False):
        diffs.append("--x64 (the run used float32)")
    if diffs:
        raise UsageError(f"--resume: {'; '.join(diffs)} {'differs' if len(diffs) == 1 else 'differ'} from the "
                         f"run in {out}; leave {'it' if len(diffs) == 1 else 'them'} out to continue with the "
                         "stored configuration, or choose another --out")
    return dict(stored)


def _run_usage_errors():
    from samplax.run import CheckpointMismatchError

    return (UsageError, CheckpointMismatchError, TypeError, ValueError)


def cmd_run(args) -> int:
    """``samplax run``: one method on one target into a run folder (see :func:`build_parser`)."""
    import samplax
    from samplax.methods import METHODS

    written, ckpt = [], None  # what this command created, removed again if the run is rejected
    try:
        target_params = _parse_sets(args.target_param, "--target-param")
        options = _parse_sets(args.set, "--set")
        try:
            spec = METHODS.get(args.method)
        except KeyError as e:
            raise UsageError(e.args[0]) from None
        if args.resume and not spec.supports_checkpoints:
            raise UsageError(f"method {args.method!r} writes no checkpoint, so --resume does not apply to it")
        out = args.out or _default_out(f"run-{args.method}-{args.target}")
        ckpt = os.path.join(out, "checkpoint") if spec.supports_checkpoints else None
        has_ckpt = ckpt is not None and os.path.exists(os.path.join(ckpt, "checkpoint.npz"))
        cfg_file = os.path.join(out, "config.json")
        given = {"method": args.method, "target": args.target, "target_params": target_params,
                 "options": options, "x64": bool(args.x64), **{k: getattr(args, k) for k, _, _ in RUN_FIELDS}}
        if args.resume:
            if not has_ckpt:
                raise UsageError(f"--resume: {out} holds no checkpoint to continue "
                                 f"({os.path.join(ckpt, 'checkpoint.npz')} is missing); run without --resume "
                                 "to start a new run")
            try:
                with open(cfg_file) as f:
                    stored = json.load(f)
            except (OSError, ValueError) as e:
                raise UsageError(f"--resume: cannot read the run's configuration {cfg_file} ({e})") from None
            config = resume_config(stored, given, {k: o.default for k, o in spec.options.items()}, out)
            if config.get("x64") and not args.x64:
                import jax

                jax.config.update("jax_enable_x64", True)
        else:
            if has_ckpt:
                raise UsageError(f"{out} already holds a checkpoint; pass --resume to continue it or choose "
                                 "another --out")
            config = {**given, **{k: d if given[k] is None else given[k] for k, _, d in RUN_FIELDS}}
        try:
            target = samplax.targets.get(config["target"], **config["target_params"])
        except KeyError as e:
            raise UsageError(e.args[0]) from None
        except TypeError as e:  # an unknown --target-param
            raise UsageError(f"target {config['target']!r}: {e} (--target-param)") from None
        spec.resolve_options(config["options"])  # names an unknown or invalid --set before anything is written
        if not args.resume:
            written += [p for p in (out, cfg_file, ckpt) if p is not None and not os.path.exists(p)]
            os.makedirs(out, exist_ok=True)
            with open(cfg_file, "w") as f:
                json.dump(config, f, indent=1)
        result = samplax.sample(target, config["method"], seed=config["seed"], num_chains=config["chains"],
                                num_warmup=config["warmup"], num_samples=config["samples"],
                                checkpoint_dir=ckpt, progress=not args.quiet,
                                checkpoint_interval=args.checkpoint_interval, **config["options"])
    except _run_usage_errors() as e:
        _remove_rejected(written, ckpt)
        print(f"samplax run: {e}", file=sys.stderr)
        return 2
    result.save(out)
    print(result.summary())
    if not args.no_report:
        from samplax.bench.report import make_report

        print(f"report: {make_report(out)}")
    print(f"run folder: {out}")
    return 0 if result.complete else 130


def _remove_rejected(written: list, ckpt) -> None:
    """Remove what a rejected run created (its folder, config.json, checkpoint folder), unless a
    checkpoint was written meanwhile (then the run started and its folder is kept)."""
    import shutil

    if ckpt is not None and os.path.exists(os.path.join(ckpt, "checkpoint.npz")):
        return
    for path in reversed(written):
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.exists(path):
            os.remove(path)


def cmd_bench(args) -> int:
    """``samplax bench``: a suite against ground truth; exit code 1 when a run failed its accuracy check."""
    from samplax.bench import run_suite
    from samplax.bench.harness import format_table, num_failed, summary_line

    out = args.out or _default_out(f"bench-{args.suite}")
    overrides = {"num_chains": args.chains, "num_warmup": args.warmup, "num_samples": args.samples}
    try:
        run = run_suite(args.suite, out_dir=out, progress=True, only=args.only, overrides=overrides,
                        ray=args.ray, retries=args.retries, budget_scale=args.budget_scale)
    except ImportError as e:
        print(f"samplax bench: {e}", file=sys.stderr)
        return 2
    except (ValueError, KeyError, TypeError) as e:
        print(f"samplax bench: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    print()
    print(format_table(run.rows))
    if any(r.get("budget") is not None for r in run.rows):
        from samplax.bench.learned import format_learned_table

        print()
        print(format_learned_table(run.rows))
    if not args.no_report:
        from samplax.bench.report import make_report

        print(f"report: {make_report(out)}")
    print(f"{summary_line(run.rows)}; run folder: {out}")
    return 1 if num_failed(run.rows) else 0


def cmd_report(args) -> int:
    from samplax.bench.report import make_report

    try:
        print(make_report(args.run_dir))
    except FileNotFoundError as e:
        print(f"samplax report: {e}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="samplax", description="Samples, expectations and log Z, in JAX.")
    p.add_argument("--x64", action="store_true", help="use float64 (jax_enable_x64)")
    sub = p.add_subparsers(dest="command", required=True)

    pl = sub.add_parser("list", help="list targets, methods or bench suites")
    pl.add_argument("what", choices=["targets", "methods", "suites"])
    pl.set_defaults(func=cmd_list)

    pr = sub.add_parser("run", help="run one method on one target")
    pr.add_argument("method")
    pr.add_argument("target")
    for _, flag, default in RUN_FIELDS:
        pr.add_argument(flag, type=int, default=None,
                        help=f"default {default} (with --resume: the stored run's value)")
    pr.add_argument("--out", default=None, help="run folder (default samplax_runs/run-...)")
    pr.add_argument("--set", action="append", metavar="KEY=VALUE", help="method option (repeatable)")
    pr.add_argument("--target-param", action="append", metavar="KEY=VALUE", help="target parameter (repeatable)")
    pr.add_argument("--resume", action="store_true",
                    help="continue the checkpoint in --out with the configuration stored there (config.json); "
                         "options given again must equal the stored ones")
    pr.add_argument("--checkpoint-interval", type=float, default=30.0, help="seconds between checkpoints")
    pr.add_argument("--quiet", action="store_true")
    pr.add_argument("--no-report", action="store_true")
    pr.set_defaults(func=cmd_run)

    pb = sub.add_parser("bench", help="run a benchmark suite against ground truth")
    pb.add_argument("suite", nargs="?", default="quick")
    pb.add_argument("--out", default=None)
    pb.add_argument("--only", action="append", help="only runs whose target or method is this (repeatable)")
    for flag, what in (("--chains", "chains"), ("--warmup", "warm-up steps"), ("--samples", "draws per chain")):
        pb.add_argument(flag, type=int, default=None,
                        help=f"{what} of every run, overriding the suite (e.g. a short smoke run); recorded "
                             "in the run folder's config.json")
    pb.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                    help="spread the runs over a Ray cluster: a local one when no ADDRESS is given, else "
                         "ray.init(address=ADDRESS); same table and run folder as a serial run")
    pb.add_argument("--retries", type=int, default=2,
                    help="with --ray: times a run that raised or lost its worker is tried again (default 2)")
    pb.add_argument("--budget-scale", default=None, metavar="SCALE",
                    help="learned suites: which budget set to run (e.g. tiny, small, medium; default the suite's)")
    pb.add_argument("--no-report", action="store_true")
    pb.set_defaults(func=cmd_bench)

    prep = sub.add_parser("report", help="write plots and report.html for a run folder")
    prep.add_argument("run_dir")
    prep.set_defaults(func=cmd_report)

    try:
        from samplax.diffusion import cli as diffusion_cli
    except ImportError:
        diffusion_cli = None
    if diffusion_cli is not None and hasattr(diffusion_cli, "add_subparser"):
        diffusion_cli.add_subparser(sub)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.x64:
        import jax

        jax.config.update("jax_enable_x64", True)
    return int(args.func(args) or 0)
