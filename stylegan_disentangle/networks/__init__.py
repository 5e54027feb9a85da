"""StyleGAN2 networks with the official parameter names and call signatures."""

from .discriminator import Discriminator, DiscriminatorBlock, DiscriminatorEpilogue, MinibatchStdLayer
from .generator import Generator
from .layers import Conv2dLayer, FullyConnectedLayer
from .mapping import MappingNetwork
from .persistence import network_classes
from .synthesis import SynthesisBlock, SynthesisLayer, SynthesisNetwork, ToRGBLayer

__all__ = [
    "Conv2dLayer",
    "Discriminator",
    "DiscriminatorBlock",
    "DiscriminatorEpilogue",
    "FullyConnectedLayer",
    "Generator",
    "MappingNetwork",
    "MinibatchStdLayer",
    "SynthesisBlock",
    "SynthesisLayer",
    "SynthesisNetwork",
    "ToRGBLayer",
    "network_classes",
]
