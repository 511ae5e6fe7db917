"""Backbone helpers: mmseg's backbones with memory options they lack."""
from .resnet_stage_cp import M2FResNet

__all__ = ['M2FResNet']
