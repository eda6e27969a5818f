#!/usr/bin/env python3
"""Container health check: GET a local HTTP endpoint (a component's /metrics or health page).

Usage: fleetsim-healthcheck URL [SUBSTRING]. Exit 0 when the answer is HTTP 200 (and contains
SUBSTRING when given), 1 otherwise. Standard library only, so it costs ~30 ms of CPU per probe.
"""

import sys
import urllib.request


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3) or not argv[1].startswith("http://127.0.0.1:"):
        print("usage: fleetsim-healthcheck http://127.0.0.1:PORT/PATH [SUBSTRING]", file=sys.stderr)
        return 2
    try:
        with urllib.request.urlopen(argv[1], timeout=5) as resp:  # noqa: S310 - loopback http only
            body = resp.read(1 << 20).decode("utf-8", errors="replace")
            ok = resp.status == 200 and (len(argv) == 2 or argv[2] in body)
    except OSError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    if not ok:
        print(f"unhealthy: unexpected answer from {argv[1]}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
