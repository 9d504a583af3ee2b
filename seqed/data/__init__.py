"""The data pipeline: corpora to raw sentences, filtering, and padded token-budget batches."""

from seqed.data.batching import Batch, ParallelData, TokenBatchSampler, collate
from seqed.data.corpus import load_hf, read_lines, read_monolingual, read_parallel, read_tsv
from seqed.data.filtering import FilterReport, filter_pairs

__all__ = [
    "Batch", "ParallelData", "TokenBatchSampler", "collate",
    "load_hf", "read_lines", "read_monolingual", "read_parallel", "read_tsv",
    "FilterReport", "filter_pairs",
]
