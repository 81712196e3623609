"""Ray Data pipelines: sources → tiled high-res + proxy → versioned Parquet datasets."""
