"""Scoring predictions: which metrics a task reports and how they are computed on logits (`metrics`),
and their standard errors (`uncertainty`). Below every stage that scores a model: the imbalance
monitor (masking), training's validation (engine), eval-subsets and compare (evaluate), attribution."""
