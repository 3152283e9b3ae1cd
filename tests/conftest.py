"""Shared test settings: CPU only, headless matplotlib, no network."""
import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")
