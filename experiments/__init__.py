"""The benchmark harness: datasets, model zoo, training cache, the runner and run records."""
