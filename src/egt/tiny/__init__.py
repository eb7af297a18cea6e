"""Tiny judges built locally: the embedded Qwen2-VL judge, every family's tiny judge, and
perception pre-training."""
