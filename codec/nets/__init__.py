"""The model: its configuration, one definition of its integer networks over two array backends (NumPy for coding
on the CPU, torch for training, large jobs and GPUs), the torch modules that train them, and model files."""
