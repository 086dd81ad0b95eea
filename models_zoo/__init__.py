"""cimconvert's model zoo: models registered in timm's registry (``timm.create_model`` finds them).

Importing this package registers ``digits_cnn`` (trained here on scikit-learn's digits, weights
included) and ``cifar10_resnet20/32/44/56/110`` (weights from akamaster/pytorch_resnet_cifar10).
"""

from . import cifar_resnet, digits
from ._registry import list_zoo_models, register_zoo_model

__all__ = ["list_zoo_models", "register_zoo_model", "cifar_resnet", "digits"]
