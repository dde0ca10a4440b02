"""Simulated MobiusFlow node (spec: /work/shared/targets/mobiusflow.md; docs/targets/mobiusflow.md)."""
