"""Foundations every other package uses: records, configs, files and journals, run folders,
errors, the prompt and verdict parser, statistics, endpoint policy, parallel jobs."""
