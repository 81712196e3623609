"""Training glue between the dataset contract, the pure-PyTorch model, Ray Train and MLflow."""
