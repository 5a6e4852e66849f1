"""Evaluation: retrieval metrics as plain functions (`metrics`), scoring a search block by block
(`scoring`), the evaluate step over a run's codes.h5 (`step`) and search-bench, the codes as a
faiss index against the exact float search (`speed`)."""
