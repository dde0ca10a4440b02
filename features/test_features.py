"""Bind every feature file in this folder; pytest-bdd turns each scenario (and example row) into a test."""

from pytest_bdd import scenarios

scenarios(".")
