"""The omnisearch proto packages (one sub-package per API version)."""
