"""``denoise3d <verb> CONFIG [section.key=value ...]`` — a thin layer over typed configs.

Verbs: pretrain, finetune, evaluate, summary. Every verb saves the resolved config beside its
checkpoints. Errors in input (config, data, checkpoint) print one line and exit with status 2;
set DENOISE3D_DEBUG=1 for the full traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from denoise3d.config import ConfigError, load_config


def _config_and_overrides(args) -> tuple[str | None, list[str]]:
    items = list(args.items)
    path = items.pop(0) if items and "=" not in items[0] else None
    return path, items


def cmd_pretrain(args) -> None:
    from denoise3d.runs import pretrain

    pretrain(load_config(*_config_and_overrides(args)))


def cmd_finetune(args) -> None:
    from denoise3d.runs import finetune

    metrics = finetune(load_config(*_config_and_overrides(args)))
    print(json.dumps(metrics, indent=2))


def cmd_evaluate(args) -> None:
    from denoise3d.runs import evaluate

    print(json.dumps(evaluate(args.checkpoint, args.split, args.overrides), indent=2))


def cmd_summary(args) -> None:
    """A table of the test metrics of finished fine-tuning runs."""
    rows = []
    for run in args.runs:
        path = Path(run) / "metrics.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no metrics.json (did the fine-tuning run finish?)")
        rows.append((run, json.loads(path.read_text())))
    for run, m in rows:
        init = m.get("init") or "from scratch"
        print(f"{m['target']:>6}  test MAE {m['test_mae']:9.3f} {m['unit']:<10} "
              f"train labels {m['train_size']:>6}  init: {init}  ({run})")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="denoise3d", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="verb", required=True)
    for verb, fn, what in [("pretrain", cmd_pretrain, "pretrain a backbone on unlabelled structures"),
                           ("finetune", cmd_finetune, "fine-tune a property head (from scratch or init=...)")]:
        s = sub.add_parser(verb, help=what)
        s.add_argument("items", nargs="*", metavar="CONFIG|key=value",
                       help="a YAML config file, then section.key=value overrides")
        s.set_defaults(fn=fn)
    s = sub.add_parser("evaluate", help="evaluate a fine-tuned checkpoint on a split")
    s.add_argument("checkpoint")
    s.add_argument("overrides", nargs="*", metavar="key=value")
    s.add_argument("--split", default="test", choices=["train", "valid", "test"])
    s.set_defaults(fn=cmd_evaluate)
    s = sub.add_parser("summary", help="print the test metrics of finished fine-tuning runs")
    s.add_argument("runs", nargs="+", metavar="RUN_DIR")
    s.set_defaults(fn=cmd_summary)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.fn(args)
    except (ConfigError, ValueError, FileNotFoundError, FloatingPointError, KeyError) as e:
        if os.environ.get("DENOISE3D_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"denoise3d: error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
