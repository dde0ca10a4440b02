"""Simulated NeuroomNet server: device.py (state), migrate.py, profiles.py, interface.py (HTTP API)."""
