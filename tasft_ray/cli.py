"""`tasft-ray` subcommands (and `python -m tasft_ray.tune`, the same `tune` command). Each one
calls a plain function that the tests call too; every user error is one line, exit code 2."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from tasft_ray.config import ConfigError, load_config
from tasft_ray.errors import find_user_error, one_line, quiet_user_errors

EPILOG_TUNE = """examples:
  python -m tasft_ray.tune                                    # the embedded default
  python -m tasft_ray.tune --config tiny --smoke-test
  python -m tasft_ray.tune --config tiny --set "sweep.space={loss.lam: {grid: [0, 1]}}"
  python -m tasft_ray.tune --resume runs/ray/sweep           # finish an interrupted sweep
  ray job submit --working-dir . -- python -m tasft_ray.tune --config tiny
"""

EPILOG_TRAIN = """examples:
  tasft-ray train --config tiny                       # seconds, built-in tiny model
  tasft-ray train --config quickstart --set loss.lam=2.0 --set train.max_steps=20
  tasft-ray train --config tiny --resume              # continue from the latest checkpoint
  tasft-ray train --config tiny --smoke-test          # 2 steps, as CI runs it
"""
EPILOG_GENERATE = """examples:
  tasft-ray generate --config quickstart --target 100      # until 100 harmful pairs are kept
  tasft-ray generate --config tiny --smoke-test
  tasft-ray generate --set "generate.prompts=[{name: catqa}]" --set generate.judge=deberta
  tasft-ray generate --config quickstart --contrastive \
      --set "generate.contrastive.writer={name: smollm2-135m-instruct}"
  (rerun the same command after an interruption: it resumes from the output file)
"""
EPILOG_DOCTOR = """examples:
  RAY_ADDRESS=ray://HEAD:10001 tasft-ray doctor --set sweep.storage=s3://BUCKET/sweeps
  (with MLFLOW_TRACKING_URI=http://HOST:5000 and the AWS_* variables, as the sweep will run)
"""
EPILOG_CONFIG = """examples:
  tasft-ray config --config tiny --set loss.method=nlcl   # print the validated, resolved YAML
"""


EPILOG_EVALUATE = """examples:
  tasft-ray evaluate --config quickstart --adapter runs/quickstart/checkpoints/step_000010/adapter
  tasft-ray evaluate --config quickstart --adapter mlflow:RUN_ID --limit 20
  tasft-ray evaluate --config quickstart --adapter models:/quickstart@champion --limit 2
  tasft-ray evaluate --config tiny --set "eval.benchmarks=[harmbench, xstest_safe]"
"""
EPILOG_REPORT = """examples:
  tasft-ray report --parent-run RUN_ID                  # one sweep (python -m tasft_ray.tune)
  tasft-ray report --experiment tasft-ray --output docs/results
  (reads tracking.uri / MLFLOW_TRACKING_URI; default sqlite:///mlflow.db in this folder)
"""


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", default=None, help="YAML file or a name in configs/ (default: quickstart)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted override, value parsed as YAML (repeatable), e.g. loss.lam=2.0",
    )


class UsageError(ConfigError):
    """A command line argparse rejects (a missing argument, a flag's bad value): one line."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one error line and exit code 2 like any other bad
    input, naming the command whose --help explains it (not argparse's usage block)."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tasft-ray", description="TA-SFT fine-tuning with EMD / NLCL safety penalties."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    tune = sub.add_parser(
        "tune",
        help="Ray Tune sweep of Ray Train trainings; same as python -m tasft_ray.tune",
        epilog=EPILOG_TUNE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_config_args(tune)
    tune.add_argument(
        "--resume",
        default=None,
        metavar="SWEEP_DIR",
        help="restore an interrupted sweep with its saved config; runs only "
        "unfinished/errored trials",
    )
    tune.add_argument("--smoke-test", action="store_true", help="2 steps per trial")
    train = sub.add_parser(
        "train",
        help="fine-tune with LoRA on one process",
        epilog=EPILOG_TRAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_config_args(train)
    train.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="CHECKPOINT",
        help="resume from CHECKPOINT, or the latest one in train.output_dir",
    )
    train.add_argument("--smoke-test", action="store_true", help="run 2 steps only")
    gen = sub.add_parser(
        "generate",
        help="self-generated harmful data: Ray Data generation + judge + filter",
        epilog=EPILOG_GENERATE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_config_args(gen)
    gen.add_argument(
        "--target",
        type=int,
        default=None,
        help="keep going until N harmful pairs are kept (generate.target)",
    )
    gen.add_argument("--output", default=None, help="JSONL path (generate.output)")
    gen.add_argument(
        "--overwrite",
        action="store_true",
        help="start over instead of resuming from an existing output",
    )
    gen.add_argument("--smoke-test", action="store_true", help="4 prompts, 8 new tokens")
    gen.add_argument(
        "--contrastive",
        action="store_true",
        help="seemingly toxic prompts with helpful answers (paper §4.3.6; generate.contrastive)",
    )
    ev = sub.add_parser(
        "evaluate",
        help="safety (518 harmful prompts) and over-refusal (XSTest) of base + adapter",
        epilog=EPILOG_EVALUATE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_config_args(ev)
    ev.add_argument("--adapter", default=None,
                    help="adapter folder, mlflow:RUN_ID or models:/NAME@ALIAS")  # fmt: skip
    ev.add_argument("--limit", type=int, default=None, help="prompts per benchmark")
    rep = sub.add_parser(
        "report",
        help="a sweep's MLflow runs -> markdown tables + PNG figures (logged to the parent run)",
        epilog=EPILOG_REPORT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_config_args(rep)
    which = rep.add_mutually_exclusive_group(required=True)
    which.add_argument("--parent-run", default=None, metavar="ID", help="one sweep's parent run")
    which.add_argument("--experiment", default=None, metavar="NAME", help="every sweep in it")
    rep.add_argument("--output", default=None, help="folder (default runs/report/<ID or NAME>)")
    doc = sub.add_parser(
        "doctor",
        help="check a Ray cluster for sweeps: nodes, and storage and tracking from every node",
        epilog=EPILOG_DOCTOR,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_config_args(doc)
    show = sub.add_parser(
        "config",
        help="validate and print a resolved config",
        epilog=EPILOG_CONFIG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_config_args(show)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    prog = "tasft-ray tune" if argv[:1] == ["tune"] else "tasft-ray"
    try:
        args, extra = build_parser().parse_known_args(argv)
        if extra:
            raise UsageError(
                f"unrecognized arguments: {' '.join(extra)} (config values are --set KEY=VALUE; "
                f"see tasft-ray {args.command} --help)"
            )
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    quiet_user_errors()
    # a bar per artifact download of a few small files (report, registry) is noise
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        return _run(args)
    except Exception as exc:  # a UserError from a Ray task, actor, worker or trial, unwrapped
        found = find_user_error(exc)
        if found is None:
            raise
        print(f"{prog}: error: {one_line(found, 2000)}", file=sys.stderr)
        return 2


def _overrides(args: argparse.Namespace) -> list[str]:
    """--set values plus the ones a command's own flags stand for."""
    overrides = list(args.overrides)
    if getattr(args, "smoke_test", False):
        overrides.append("train.max_steps=2")
        if args.command != "tune":
            overrides += ["generate.max_prompts=4", "generate.sampling.max_new_tokens=8"]
    if getattr(args, "target", None) is not None:  # 0 is rejected by validation, not "all"
        overrides.append(f"generate.target={args.target}")
    if getattr(args, "output", None) and args.command == "generate":
        key = "generate.contrastive.output" if args.contrastive else "generate.output"
        overrides.append(f"{key}={json.dumps(args.output)}")  # a path, not YAML
    if getattr(args, "adapter", None):
        overrides.append(f"eval.adapter={json.dumps(args.adapter)}")
    if getattr(args, "limit", None) is not None:
        overrides.append(f"eval.max_prompts={args.limit}")
    return overrides


def _run(args: argparse.Namespace) -> int:
    overrides = _overrides(args)
    if args.command == "tune":
        return _tune(args, overrides)
    cfg = load_config(args.config, overrides)
    if args.command == "config":
        sys.stdout.write(cfg.to_yaml())
        return 0
    if args.command == "generate" and args.contrastive:
        return _contrastive(cfg, args.overwrite)
    if args.command == "generate":
        return _generate(cfg, args.overwrite)
    if args.command == "evaluate":
        return _evaluate(cfg)
    if args.command == "report":
        return _report(cfg, args.parent_run, args.experiment, args.output)
    if args.command == "doctor":
        return _doctor(cfg)
    from tasft_ray.sweep.prepared import training_mixture
    from tasft_ray.training.local import run_training

    # the mixture as a sweep's driver builds it (STAR-DSS: scored by its guardrail)
    result = run_training(cfg, resume=args.resume, prepare_mixture=training_mixture, tracked=True)
    loss = result.metrics.get("loss/total", float("nan"))
    done = (
        f"already finished at step {result.step}"
        if result.finished_before
        else (f"trained {result.step} steps")
    )
    print(f"{done}; final loss {loss:.4f}; checkpoint {result.checkpoint}")
    return 0


def _tune(args: argparse.Namespace, overrides: list[str]) -> int:
    from tasft_ray.sweep.driver import run_sweep
    from tasft_ray.sweep.paths import load_sweep_config
    from tasft_ray.sweep.summary import summary

    if args.resume and args.config:
        raise ConfigError("--resume uses the sweep's saved config; drop --config")
    if args.resume:
        cfg = load_sweep_config(args.resume, overrides)
    else:
        cfg = load_config(args.config, overrides)
    if cfg.sweep.toxic_search is not None:
        return _toxic_search(cfg)
    try:
        outcome = run_sweep(cfg, resume=args.resume)
    except KeyboardInterrupt:
        print("tasft-ray tune: interrupted; finish it with --resume SWEEP_DIR", file=sys.stderr)
        return 130
    print(summary(outcome, cfg))
    where = (
        f"results: {outcome.sweep.uri}; MLflow: parent run {outcome.parent_run_id} at "
        f"{outcome.tracking_uri}"
    )
    if outcome.report:
        print(f"\n{outcome.report_text}\nreport: {outcome.report.uri}/report.md")
    if outcome.registered:
        r = outcome.registered
        print(f"registered: {r.uri} (version {r.version}, {r.label})")
    print(where)
    if outcome.unfinished or outcome.not_started:
        later = f" and {outcome.not_started} not started" if outcome.not_started else ""
        print(
            f"tasft-ray tune: interrupted with {len(outcome.unfinished)} trial(s) unfinished "
            f"({', '.join(outcome.unfinished) or 'none'}){later}; finish them with --resume "
            f"{outcome.sweep.uri}",
            file=sys.stderr,
        )
        return 130
    failed = outcome.failed
    user = [(name, find_user_error(err)) for name, err in failed]
    if failed and all(u for _, u in user):  # bad input: resuming would fail the same way
        for name, err in user:
            print(f"tasft-ray tune: error: trial {name}: {err}", file=sys.stderr)
        return 2
    if failed:
        print(
            f"{len(failed)} trial(s) failed; finish them with --resume {outcome.sweep.uri}",
            file=sys.stderr,
        )
        return 1
    return 0


def _toxic_search(cfg) -> int:
    from tasft_ray.sweep.toxic_search import describe, run_toxic_search

    try:
        answer, visited = run_toxic_search(cfg)
    except KeyboardInterrupt:
        print("tasft-ray tune: interrupted; rerun the same command to continue", file=sys.stderr)
        return 130
    print(describe(cfg, answer, visited))
    if visited and (visited[-1].outcome.unfinished or visited[-1].outcome.not_started):
        print("tasft-ray tune: interrupted; rerun the same command to continue", file=sys.stderr)
        return 130
    return 0


def _generate(cfg, overwrite: bool) -> int:
    from tasft_ray.generation.run import run_generate

    result = run_generate(cfg, overwrite=overwrite)
    run_id = result.run_id
    rate = result.new_rows / result.seconds if result.seconds else 0.0
    print(
        f"{result.rows} judged rows ({result.harmful} harmful, {result.new_rows} new in "
        f"{result.seconds:.0f} s, {rate:.2f} rows/s) -> {result.path}; MLflow run {run_id}"
    )
    if cfg.generate.target and result.harmful < cfg.generate.target:
        print(
            f"prompts ran out: {result.harmful} of the {cfg.generate.target} harmful pairs wanted"
        )
    return 0


def _contrastive(cfg, overwrite: bool) -> int:
    from tasft_ray.generation.contrastive import run_contrastive

    r = run_contrastive(cfg, overwrite=overwrite)
    print(
        f"{r.words} toxic words -> {r.written} written prompts, {r.prompts} kept -> "
        f"{r.answered} answered, {r.refused} refused -> {r.rows} rows ({r.new_rows} new in "
        f"{r.seconds:.0f} s) -> {r.path}; MLflow run {r.run_id}"
    )
    return 0


def _report(cfg, parent_run: str | None, experiment: str | None, output: str | None) -> int:
    from tasft_ray import tracking
    from tasft_ray.report import REPORT_MD, format_trials, write_report

    uri = tracking.tracking_uri(cfg)
    tracking.check_reachable(uri, existing=True)
    out = output or f"runs/report/{parent_run or experiment}"
    folder, trials = write_report(uri, out, parent_run_id=parent_run, experiment=experiment)
    print(format_trials(trials))
    print(f"report: {folder / REPORT_MD}")
    return 0


def _doctor(cfg) -> int:
    from tasft_ray.doctor import check

    report = check(cfg)
    for line in report.nodes:
        print(line)
    for line in report.problems:
        print(f"tasft-ray doctor: problem: {line}", file=sys.stderr)
    print(f"{len(report.nodes)} node(s), {len(report.problems)} problem(s)")
    return 2 if report.problems else 0


def _evaluate(cfg) -> int:
    from tasft_ray.evaluation.metrics import format_summary
    from tasft_ray.evaluation.safety import run_evaluate

    result = run_evaluate(cfg)
    print(format_summary(result.metrics, cfg.eval.benchmarks))
    print(
        f"{result.rows} prompts in {result.seconds:.0f} s "
        f"({result.rows / max(result.seconds, 1e-9):.2f} prompts/s) -> {result.output_dir}; "
        f"MLflow run {result.run_id}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
