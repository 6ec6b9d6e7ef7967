"""Closed-loop evaluation in simulators and the diagnostics that explain a policy's failures."""
