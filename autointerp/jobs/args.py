"""Command lines of jobs: a config as CLI flags, several commands as one argv joined by `--`."""

from __future__ import annotations

import dataclasses
import typing


def join_steps(steps: list[list[str]]) -> list[str]:
    out: list[str] = []
    for step in steps:
        out += ["--", *step]
    return out


def split_steps(argv: list[str]) -> list[list[str]]:
    steps, cur = [], None
    for a in argv:
        if a == "--":
            cur = []
            steps.append(cur)
        elif cur is None:
            raise ValueError(f"expected `--` before {a!r}")
        else:
            cur.append(a)
    return [s for s in steps if s]


def config_args(cfg) -> list[str]:
    """CLI flags (as cli.add_config_flags names them) for the fields of a config dataclass that
    differ from their defaults. `api_key` is left out: pass it through `launch(env=...)`."""
    hints = typing.get_type_hints(type(cfg))
    out: list[str] = []
    for f in dataclasses.fields(cfg):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        value = getattr(cfg, f.name)
        if value == default or f.name == "api_key":
            continue
        flag = "--" + f.name.replace("_", "-")
        if hints[f.name] is bool:
            out.append(flag if value else "--no-" + flag[2:])
        elif typing.get_origin(hints[f.name]) is list:
            if not value:
                raise ValueError(f"{f.name} cannot be passed empty on the command line")
            out += [flag, *map(str, value)]
        else:
            out += [flag, str(value)]
    return out


def interpret_args(cfg) -> list[str]:
    """Flags for `autointerp explain|score` from an InterpretConfig (non-default fields only)."""
    return config_args(cfg)
