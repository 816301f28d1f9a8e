"""AlexNet (Krizhevsky, Sutskever and Hinton, NIPS 2012): the network, its training recipe, tools."""

from alexnet.lrn import LocalResponseNorm, local_response_norm
from alexnet.models import MODELS, NETWORKS, build_model

__all__ = ["MODELS", "NETWORKS", "LocalResponseNorm", "build_model", "local_response_norm"]
__version__ = "0.1.0"
