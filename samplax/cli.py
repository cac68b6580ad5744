"""The ``samplax`` command line: thin parsing at the edge, then the library.

  samplax list targets|methods|suites
  samplax run METHOD TARGET [--chains --warmup --samples --seed --out DIR --set key=value ... --resume]
  samplax bench [SUITE] [--out DIR]
  samplax report RUN_DIR
"""
from __future__ import annotations

import argparse
import ast
import datetime
import json
import os
import sys


def _parse_value(text: str):
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _parse_sets(pairs) -> dict:
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise SystemExit(f"samplax: --set expects key=value, got {p!r}")
        k, v = p.split("=", 1)
        out[k.strip()] = _parse_value(v.strip())
    return out


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


def cmd_run(args) -> int:
    import samplax
    from samplax.run import CheckpointMismatchError

    target_params = _parse_sets(args.target_param)
    options = _parse_sets(args.set)
    try:
        target = samplax.targets.get(args.target, **target_params)
    except KeyError as e:
        print(f"samplax run: {e.args[0]}", file=sys.stderr)
        return 2
    if args.method not in samplax.method_names():
        from samplax.methods import METHODS

        try:
            METHODS.get(args.method)
        except KeyError as e:
            print(f"samplax run: {e.args[0]}", file=sys.stderr)
            return 2
    from samplax.methods import METHODS

    spec = METHODS.get(args.method)
    if args.resume and not spec.supports_checkpoints:
        print(f"samplax run: method {args.method!r} writes no checkpoint, so --resume does not apply to it",
              file=sys.stderr)
        return 2
    out = args.out or _default_out(f"run-{args.method}-{args.target}")
    ckpt = os.path.join(out, "checkpoint") if spec.supports_checkpoints else None
    if ckpt is not None and os.path.exists(os.path.join(ckpt, "checkpoint.npz")) and not args.resume:
        print(f"samplax run: {out} already holds a checkpoint; pass --resume to continue it "
              "or choose another --out", file=sys.stderr)
        return 2
    os.makedirs(out, exist_ok=True)
    config = {"method": args.method, "target": args.target, "target_params": target_params, "options": options,
              "chains": args.chains, "warmup": args.warmup, "samples": args.samples, "seed": args.seed}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    try:
        result = samplax.sample(target, args.method, seed=args.seed, num_chains=args.chains,
                                num_warmup=args.warmup, num_samples=args.samples,
                                checkpoint_dir=ckpt, progress=not args.quiet,
                                checkpoint_interval=args.checkpoint_interval, **options)
    except CheckpointMismatchError as e:
        print(f"samplax run: {e}", file=sys.stderr)
        return 2
    except (TypeError, ValueError) as e:
        print(f"samplax run: {e}", file=sys.stderr)
        return 2
    result.save(out)
    print(result.summary())
    if not args.no_report:
        from samplax.bench.report import make_report

        print(f"report: {make_report(out)}")
    print(f"run folder: {out}")
    return 0 if result.complete else 130


def cmd_bench(args) -> int:
    from samplax.bench import run_suite
    from samplax.bench.harness import format_table

    out = args.out or _default_out(f"bench-{args.suite}")
    try:
        run = run_suite(args.suite, out_dir=out, progress=True, only=args.only)
    except (ValueError, KeyError) as e:
        print(f"samplax bench: {e}", file=sys.stderr)
        return 2
    print()
    print(format_table(run.rows))
    if not args.no_report:
        from samplax.bench.report import make_report

        print(f"report: {make_report(out)}")
    n_fail = sum(1 for r in run.rows if r.get("status") == "FAIL")
    print(f"{len(run.rows) - n_fail} passed, {n_fail} failed against ground truth; run folder: {out}")
    return 1 if n_fail else 0


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
    pr.add_argument("--chains", type=int, default=4)
    pr.add_argument("--warmup", type=int, default=1000)
    pr.add_argument("--samples", type=int, default=1000)
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--out", default=None, help="run folder (default samplax_runs/run-...)")
    pr.add_argument("--set", action="append", metavar="KEY=VALUE", help="method option (repeatable)")
    pr.add_argument("--target-param", action="append", metavar="KEY=VALUE", help="target parameter (repeatable)")
    pr.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    pr.add_argument("--checkpoint-interval", type=float, default=30.0, help="seconds between checkpoints")
    pr.add_argument("--quiet", action="store_true")
    pr.add_argument("--no-report", action="store_true")
    pr.set_defaults(func=cmd_run)

    pb = sub.add_parser("bench", help="run a benchmark suite against ground truth")
    pb.add_argument("suite", nargs="?", default="quick")
    pb.add_argument("--out", default=None)
    pb.add_argument("--only", action="append", help="only runs whose target or method is this (repeatable)")
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
