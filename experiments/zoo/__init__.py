"""The model zoo: the torch, text and Keras classifiers the benchmark explains, and the
train-on-first-use model cache (:mod:`experiments.zoo.training`)."""
