"""The kernel: the floor every other layer stands on.

Typed configuration, the wire contract, the exception hierarchy, client factories for the engines,
the fleet-file model and the fault catalog. It imports nothing else from the project; the runtimes
(``fleetsim.edge``, ``fleetsim.bridge``, ``fleetsim.cloud``) import only this, and the operations
code (stack, registry, experiments, bench, CLI) sits on top. ``make lint`` checks it.
"""
