"""Child process of the harness: load the config once, run one benchmark, write its result."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

from fleetsim.kernel.config import load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fleetsim.bench.child")
    parser.add_argument("path", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    # The repository root, so benchmark modules can import their siblings and the test helpers.
    sys.path.insert(0, str(args.path.resolve().parent.parent))
    spec = importlib.util.spec_from_file_location(f"bench_{args.path.stem}", args.path)
    if spec is None or spec.loader is None:
        print(f"cannot import {args.path}", file=sys.stderr)
        return 2
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs: dataclasses (and pickling) look their module up in sys.modules.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    cfg = load_config(None, cwd=Path(args.out).parent)
    result = module.run(cfg, args.quick)
    args.out.write_text(json.dumps(result, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
