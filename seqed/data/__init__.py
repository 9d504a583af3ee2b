"""Everything that turns text into ids: the corpus reader (`corpus`), the tokenizer trainer and the preprocessing
workers (`preprocess`), filtering, the stores (`store`: in memory, or binarized on disk), a run's data
(`pipeline`), token-budget batches (`batching`), and corpus downloads (`corpora`).

Only the batching and filtering names are imported here: model-side code imports `seqed.data.batching`, and
the readers need `seqed.config`.
"""

from seqed.data.batching import Batch, ParallelData, TokenBatchSampler, collate
from seqed.data.filtering import FilterReport, filter_pairs

__all__ = ["Batch", "ParallelData", "TokenBatchSampler", "collate", "FilterReport", "filter_pairs"]
