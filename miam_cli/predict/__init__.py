"""`miam predict`: a trained model's probabilities for the samples of any split (the unlabelled
`predict` split included), from any subset of modalities, as Parquet/CSV tables or a GeoLifeCLEF
submission. `miam map` (in `miam_cli.maps`) does the same for the pixels of a grid."""
