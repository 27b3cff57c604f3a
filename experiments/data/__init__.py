"""The benchmark's data: dataset loaders split by kind, their registry
(:mod:`experiments.data.datasets`, the configs' ``_target_``) and the text modality's tokenizer."""
