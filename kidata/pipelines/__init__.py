"""Pipelines: statistics, builds, shards and the mixture loader."""
