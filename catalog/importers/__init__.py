"""Importers of public data sets and of a user's own files into the catalog."""
