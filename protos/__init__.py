"""The .proto contract and its generated Python code."""
