"""Runs over whole models: visualize (with its sanity figures), distributed runs and offline
shards, and the end-to-end demos."""
