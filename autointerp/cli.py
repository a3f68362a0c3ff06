"""`autointerp <command>`: flags are generated from the dataclass configs in config.py."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import typing

from autointerp.config import (COMMAND_NAMES, STUDIES, AnalyzeConfig, CacheConfig, CompactConfig, DemoConfig,
                               ExportConfig, InterpretConfig, TrainConfig)
from autointerp.core.errors import AutointerpError

log = logging.getLogger("autointerp")


def add_config_flags(parser: argparse.ArgumentParser, cls) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        help_text = f.metadata.get("help", "")  # ArgumentDefaultsHelpFormatter appends "(default: …)"
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default,
                                help=help_text)
        elif typing.get_origin(kind) is list:
            parser.add_argument(flag, dest=f.name, nargs="+", type=typing.get_args(kind)[0], default=default,
                                help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, type=kind, default=default, help=help_text)


def config_from_args(cls, args: argparse.Namespace):
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def cmd_train_sae(args) -> None:
    from autointerp.models.train import train_saes

    results = train_saes(config_from_args(TrainConfig, args))
    for hp, m in results.items():
        print(f"{hp}: FVU {m['fvu']:.3f}  L0 {m['l0']:.1f}  dead {m['dead_pct']:.1f}%  "
              f"({m['train_tokens']} tokens x {m['epochs']} epochs, {m['train_seconds']} s)")


def cmd_cache(args) -> None:
    from autointerp.runs.cache import cache_run

    print(cache_run(config_from_args(CacheConfig, args)))


def cmd_demo(args) -> None:
    from autointerp.demo import run_demo

    print(run_demo(config_from_args(DemoConfig, args)))


def cmd_explain(args) -> None:
    from autointerp.runs.interpret import run_explain

    for r in run_explain(config_from_args(InterpretConfig, args)):
        print(f"{r['hookpoint']} {r['latent']}: " + (r["explanation"] or f"FAILED ({r['error']})"))


def cmd_score(args) -> None:
    from autointerp.runs.interpret import run_score

    for r in run_score(config_from_args(InterpretConfig, args)):
        if r.get("error"):
            print(f"{r['hookpoint']} {r['latent']} {r['scorer']}: FAILED ({r['error']})")
            continue
        shown = ", ".join(f"{k.replace('_', ' ')} {r[k]:.3f}" for k in ("balanced_accuracy", "auroc", "correlation",
                                                                        "intervention_score")
                          if r.get(k) is not None)
        print(f"{r['hookpoint']} {r['latent']} {r['scorer']}: {shown or 'no score'}, n={r['n']}, "
              f"failures={r['n_failed']}")


def cmd_validate(args) -> None:
    from autointerp.runs.validity import run_validate

    summary = run_validate(config_from_args(InterpretConfig, args))
    print(f"{'scorer':12s} {'n':>3s} {'true':>6s} {'random':>7s} {'neutral':>7s} {'diff':>6s}  95% CI          verdict")
    for r in summary.itertuples():
        print(f"{r.scorer:12s} {r.n_latents:3d} {r.true_mean:6.3f} {r.random_mean:7.3f} {r.neutral_mean:7.3f} "
              f"{r.diff:6.3f}  [{r.ci_lo:6.3f}, {r.ci_hi:6.3f}]  p {r.p_value:.4f}  {r.verdict}")


def cmd_analyze(args) -> None:
    import pandas as pd

    from autointerp.runs.studies import run_study

    table = run_study(args.study, config_from_args(AnalyzeConfig, args))
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format", "{:.3f}".format):
        print(table.to_string(index=False))


def cmd_export(args) -> None:
    from autointerp.app.export import export_run

    written = export_run(config_from_args(ExportConfig, args))
    for path in written:
        print(path)
    print(f"{len(written)} files written" + (f" to {written[0].parent}" if written else ""))


def cmd_compact(args) -> None:
    from autointerp.store import compact_run, result_part_counts, run_path

    cfg = config_from_args(CompactConfig, args)
    run_dir = run_path(cfg.run)
    if not (run_dir / "run.json").exists():
        raise AutointerpError(f"no run at {run_dir}: pass --run with a name from `autointerp runs` or a run folder")
    merged = compact_run(run_dir, cfg.grace_s)
    for kind, n in result_part_counts(run_dir).items():
        print(f"{kind}: {merged[kind]} parts merged, {n} parts now read")


def cmd_models(args) -> None:
    from autointerp.models.subject import EMBEDDED_MODELS, embedded_model_dir

    for alias in args.aliases or list(EMBEDDED_MODELS):
        print(f"{alias}: {embedded_model_dir(alias)}")


def cmd_runs(args) -> None:
    from autointerp.store import list_runs

    for r in list_runs():
        print(json.dumps({k: r.get(k) for k in ("name", "model", "n_tokens", "status", "path")}))


COMMANDS = {
    "train-sae": (cmd_train_sae, TrainConfig, "train top-k SAEs (sae-lens format) on hookpoints of a model"),
    "cache": (cmd_cache, CacheConfig, "cache sparse-coder activations over a corpus into a run folder"),
    "demo": (cmd_demo, DemoConfig, "build the demo run end to end: model, SAEs, cache (idempotent)"),
    "explain": (cmd_explain, InterpretConfig, "explain chosen latents with an LLM (append-only, resumable)"),
    "score": (cmd_score, InterpretConfig, "score explanations: detection, fuzzing, embedding, surprisal, simulation, "
              "intervention (steering); and latents without one: intruder"),
    "validate": (cmd_validate, InterpretConfig, "does each scorer tell true from random explanations? paired "
                 "bootstrap CI over latents, stored for the app"),
    "analyze": (cmd_analyze, AnalyzeConfig, "the paper's analyses, stored for the app: sampling (strategies), coders "
                "(SAE latents vs neurons), overlap (adjacent layers), agreement (scorer correlations)"),
    "export": (cmd_export, ExportConfig, "write a run's figures (png/svg/pdf) and tables (CSV) to a folder"),
    "compact": (cmd_compact, CompactConfig, "merge a run's many small result parts into one per kind (safe while "
                "the app reads; resumable after a kill)"),
    "models": (cmd_models, None, "prepare the embedded models (assemble, hash-check, convert once)"),
    "runs": (cmd_runs, None, "list cached runs"),
}
assert tuple(COMMANDS) == COMMAND_NAMES, "config.COMMAND_NAMES must list cli.COMMANDS"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autointerp", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (fn, cls, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        if cls is not None:
            add_config_flags(p, cls)
        if name == "analyze":
            p.add_argument("study", choices=STUDIES, help="which study")
        if name == "models":
            p.add_argument("aliases", nargs="*", default=[], help="smollm2 and/or qwen1.5b; both when none is named")
        p.set_defaults(func=fn)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        args.func(args)
    except AutointerpError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: completed parts are kept; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
