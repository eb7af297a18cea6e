"""Data: benchmark and training-set readers (`readers.load_benchmark`), `egt data convert` (with
decontamination, egt.data.dedup), `egt data inspect`, and the synthetic benchmark (`egt data synth`)."""

from egt.data.readers import FORMATS, LoadResult, load_benchmark

__all__ = ["FORMATS", "LoadResult", "load_benchmark"]
