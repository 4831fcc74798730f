"""`tasft-ray generate`: the harmful pairs (D_safety-related) a model writes itself, judged and
filtered through the answer pipeline."""
