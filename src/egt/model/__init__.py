"""Judge models: loading, families, input encoding, generation, entropy kernels and token
spans, and the training setup shared by SFT and RL."""
