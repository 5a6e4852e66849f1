"""Evaluation: retrieval metrics as plain functions (`metrics`), scoring a search block by block
(`scoring`), and the evaluate step over a run's codes.h5 (`step`)."""
