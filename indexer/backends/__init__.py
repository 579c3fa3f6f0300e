"""One ANN backend per module behind the AnnBackend protocol, looked up in a registry."""
