"""`miam map RUN SPEC.yaml`: species distribution maps and per-pixel modality contributions.

- `spec.py`   the map spec (a grid, and which dataset-spec modalities to compute at each pixel);
- `grid.py`   the grid (template raster, or bbox + resolution + CRS), its tiles and pixel centres;
- `pixels.py` a pixel's tokens, computed by the same builders as `prepare custom`, normalised as in the run's store;
- `tiles.py`  one tile: probabilities, richness, coverage and exact modality Shapley bands;
- `output.py` tiles kept on disk (resume, shards), then assembled into one Cloud-Optimised GeoTIFF;
- `run.py`    the library function behind the command.
"""
