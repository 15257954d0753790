"""miam: Modality Imbalance-Aware Masking for multimodal ecological data."""

__version__ = "0.1.0"
