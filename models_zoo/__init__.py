"""cimconvert's model zoo: models registered in timm's registry (``timm.create_model`` finds them).

Importing this package registers ``digits_cnn`` (trained here on scikit-learn's digits, weights
included), ``cifar10_resnet20/32/44/56/110`` (weights from akamaster/pytorch_resnet_cifar10) and
``cifar10_vgg11_bn`` ... ``cifar100_vgg19_bn`` (weights from chenyaofo/pytorch-cifar-models).
"""

from . import cifar_resnet, cifar_vgg, digits
from ._registry import list_zoo_models, register_zoo_model

__all__ = ["list_zoo_models", "register_zoo_model", "cifar_resnet", "cifar_vgg", "digits"]
