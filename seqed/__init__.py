"""seqed: sequence-to-sequence learning (translation and sequence autoencoders) in plain PyTorch."""

__version__ = "0.1.0"
