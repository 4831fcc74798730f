"""Evaluation: safety and over-refusal of answers (safety, metrics, degenerate), and what is
scored on the model itself (quality through lm-eval, likelihood, AlpacaEval)."""
