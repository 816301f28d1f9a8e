"""AlexNet (Krizhevsky, Sutskever and Hinton, NIPS 2012): the network, its training recipe, tools.

The package's parts: ``ops`` (LRN and Winograd's convolutions, with their compiled kernels),
``models``, ``data``, the training modules, the modules that use a trained network, the
``experiments`` and the command line (``cli``).
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

from alexnet.models import MODELS, NETWORKS, build_model
from alexnet.ops.lrn import LocalResponseNorm, local_response_norm

__all__ = ["MODELS", "NETWORKS", "LocalResponseNorm", "build_model", "local_response_norm"]
__version__ = "0.1.0"

# Modules that moved into a subpackage, and their new names. Code written against the old names
# still imports them (the same module object) with a DeprecationWarning.
MOVED = {
    "alexnet.lrn": "alexnet.ops.lrn",
    "alexnet.lrn_triton": "alexnet.ops.lrn_triton",
    "alexnet.native": "alexnet.ops.native",
    "alexnet.winograd": "alexnet.ops.winograd",
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
