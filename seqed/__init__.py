"""seqed: sequence-to-sequence learning (translation and sequence autoencoders) in plain PyTorch.

The Python API (README "Python API")::

    from seqed import Translator
    translator = Translator.from_checkpoint("runs/multi30k_transformer", beam=5)
    print(translator.translate_lines(["A man rides a bike."]))

The names below are imported on first use, so ``import seqed`` (and ``seqed --help``) stays cheap.
"""

import importlib
import sys
import types

__version__ = "0.1.0"

API = {  # public name -> its module
    "Translator": "seqed.translator",
    "CTranslate2Translator": "seqed.translator_ct2",
    "SearchSettings": "seqed.decoding",
    "TextOutput": "seqed.decoding",
    "load_model": "seqed.loading",
    "load_ensemble": "seqed.loading",
    "load_translator": "seqed.loading",
    "Config": "seqed.config",
    "load_config": "seqed.config",
    "train": "seqed.train",
}

__all__ = ["__version__", *API]


def __getattr__(name: str):
    if name not in API:
        raise AttributeError(f"module 'seqed' has no attribute {name!r}")
    value = getattr(importlib.import_module(API[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(API))


class _Package(types.ModuleType):
    """Keeps ``seqed.train`` the function: importing the submodule `seqed/train.py` would otherwise bind
    the module to that name on the package (the submodule stays in ``sys.modules["seqed.train"]``)."""

    def __setattr__(self, name, value):
        if name == "train" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
