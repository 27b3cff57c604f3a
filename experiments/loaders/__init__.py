"""Dataset loaders, split by kind; import them from `experiments.datasets`."""
