"""Chaos campaigns: a seeded schedule of overlapping faults against a dedicated pipeline, and the
ground-truth checker that proves what was acknowledged was stored exactly once.

- :mod:`.schedule`: the pure, seeded schedule generator (which fault, on what, when, how long).
- :mod:`.pipeline`: dedicated engines plus the bridge and the streaming job as child processes.
- :mod:`.checker`: the QoS 1 ground-truth publisher and the checks (rows, aggregates, alerts).
- :mod:`.nemesis`: the fault actions (signals, restarts, link proxies, reconnect storm).
- :mod:`.runner`: one campaign end to end; :mod:`.report`: its markdown, JSON and timeline PNG.

The reliability drills (``tests/reliability``) use the same pipeline, publisher and checker.
"""

from fleetsim.kernel.errors import FleetsimError


class ChaosError(FleetsimError):
    """A campaign could not run (a component did not come back, a check could not be made)."""
