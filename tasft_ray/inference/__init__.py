"""Inference: the answer pipeline (generator actors, HF or vLLM, then the judge stage) that
`tasft-ray generate` and `tasft-ray evaluate` share, and the adapters it answers with."""
