"""fxenergy's built-in passes, one per file, each registered under its kebab-case name.

Installed as ``fxenergy.passes``; :func:`fxenergy.graph.pass_infra.registered_passes` imports every
module in this package, so adding a file adds a pass.
"""
