"""Losses: no-object weighted CE, point-sampled BCE and Dice, set criterion."""
from .class_loss import M2FClassLoss
from .mask_losses import M2FPointBCELoss, M2FPointDiceLoss
from .set_criterion import SetCriterion, loss_names

__all__ = ['M2FClassLoss', 'M2FPointBCELoss', 'M2FPointDiceLoss',
           'SetCriterion', 'loss_names']
