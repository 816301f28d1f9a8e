"""AlexNet (Krizhevsky, Sutskever and Hinton, NIPS 2012): the network, its training recipe, tools.

The package's parts: ``ops`` (LRN and Winograd's convolutions, with their compiled kernels),
``models``, ``data``, ``training``, ``inference`` (what uses a trained network), the ``experiments``
and the command line (``cli``).

Importing the package imports nothing heavy: the names below load PyTorch when first used, so
that the ``alexnet`` command can install its signal handlers before PyTorch's few seconds of
import, and ``alexnet --version`` answers at once.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__all__ = ["MODELS", "NETWORKS", "LocalResponseNorm", "build_model", "local_response_norm"]
__version__ = "0.1.0"

# The package's own names, from the modules that define them (loaded on first use).
_EXPORTS = {
    "MODELS": "alexnet.models",
    "NETWORKS": "alexnet.models",
    "build_model": "alexnet.models",
    "LocalResponseNorm": "alexnet.ops.lrn",
    "local_response_norm": "alexnet.ops.lrn",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'alexnet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


# Modules that moved into a subpackage, and their new names. Code written against the old names
# still imports them (the same module object) with a DeprecationWarning.
MOVED = {
    "alexnet.lrn": "alexnet.ops.lrn",
    "alexnet.lrn_triton": "alexnet.ops.lrn_triton",
    "alexnet.native": "alexnet.ops.native",
    "alexnet.winograd": "alexnet.ops.winograd",
    "alexnet.train": "alexnet.training.train",
    "alexnet.state": "alexnet.training.state",
    "alexnet.runs": "alexnet.training.runs",
    "alexnet.schedules": "alexnet.training.schedules",
    "alexnet.logger": "alexnet.training.logger",
    "alexnet.report": "alexnet.training.report",
    "alexnet.lr_find": "alexnet.training.lr_find",
    "alexnet.finetune": "alexnet.training.finetune",
    "alexnet.evaluate": "alexnet.training.evaluate",
    "alexnet.eval_checkpoints": "alexnet.inference.eval_checkpoints",
    "alexnet.predict": "alexnet.inference.predict",
    "alexnet.figure_data": "alexnet.inference.figure_data",
    "alexnet.figures": "alexnet.inference.figures",
    "alexnet.export": "alexnet.inference.export",
    "alexnet.safetensors_file": "alexnet.inference.safetensors_file",
    "alexnet.trained": "alexnet.inference.trained",
    "alexnet.crops": "alexnet.inference.crops",
    "alexnet.lrn_divisor": "alexnet.inference.lrn_divisor",
    "alexnet.summary": "alexnet.models.summary",
    "alexnet.memory": "alexnet.models.memory",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import alexnet.lrn`` gives ``alexnet.ops.lrn`` itself: the loader puts the moved module
    in ``sys.modules`` under the old name, which the import system then returns."""

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec):
        return None  # a placeholder, replaced in exec_module

    def exec_module(self, module) -> None:
        new = MOVED[module.__name__]
        warnings.warn(f"{module.__name__} is now {new}; import that", DeprecationWarning,
                      stacklevel=2)  # fmt: skip
        sys.modules[module.__name__] = importlib.import_module(new)


sys.meta_path.append(_MovedModules())
