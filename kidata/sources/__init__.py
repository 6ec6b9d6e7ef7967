"""Readers and generators that yield robot episodes, action chunks or VLM examples."""
