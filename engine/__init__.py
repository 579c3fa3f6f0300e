"""The gRPC search server: Search, Embed, Admin, health, hot swap of generations."""
