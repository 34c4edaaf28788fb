"""Molecule chemistry, tokenizer, graph featurizer, the two encoders, the embedder and pretraining."""
