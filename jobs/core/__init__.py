"""What training (`jobs/training/`) and operations (`jobs/ops/`) both use, so neither imports the
other: reading a dataset version into model batches (`data`), scoring a model on a split
(`evaluation`, `assess`), drawing glimpse pictures (`pictures`) and the registered model's
pyfunc (`packaging`). It may read training's configuration (`jobs.training.recipes`: how a saved
model is rebuilt), never the training loop, the trainer or their tracking."""
