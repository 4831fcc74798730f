"""tasft-ray: TA-SFT (toxicity-avoiding supervised fine-tuning) on Ray, tracked in MLflow."""

__version__ = "0.1.0"
