"""Fusion of the SMILES-view and graph-view embeddings, and the property heads trained on them."""
