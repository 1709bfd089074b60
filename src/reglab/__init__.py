"""reglab: batch norm, dropout and noise studies over many seeds (Snakemake + Lightning workflow)."""

__version__ = "0.1.0"
