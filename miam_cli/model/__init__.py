"""Per-modality tokenizers and the token-dropping transformer (see docs/architecture.md, "Model")."""

from miam_cli.model.layout import KINDS, ModalityLayout, TokenLayout
from miam_cli.model.losses import make_loss, positive_class_weights
from miam_cli.model.transformer import MODEL_TYPES, MaskTokenModel, MiamModel, bucket_bounds

__all__ = [
    "KINDS", "MODEL_TYPES", "MaskTokenModel", "MiamModel", "ModalityLayout", "TokenLayout",
    "bucket_bounds", "make_loss", "positive_class_weights",
]
