"""Datasets: the canonical form, the synthetic generator, readers for FineDiving and MTL-AQA."""
