"""Pure-PyTorch models: the variational saccader, its baselines, objectives and named variants.

Imports only torch (never ray, mlflow, pyarrow or s3fs): tensors in, tensors out, the device
passed in. Entry points: `model.variants.create_model`, `model.step.train_step` / `eval_step`.
"""
