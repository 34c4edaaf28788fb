"""Auxiliary-dataset recommendation (MolGroup-style routing) over the catalog of labelled sets."""
