"""Simulated MobiusFlow node (spec: the target spec shared/targets/mobiusflow.md; docs/targets/mobiusflow.md)."""
