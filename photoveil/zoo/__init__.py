"""Classifier zoo: the generator paper's 8 architectures at 32x32, training and checkpoints.

Modules: :mod:`~photoveil.zoo.archs` (networks), :mod:`~photoveil.zoo.registry`
(``ARCHS``, ``create``), :mod:`~photoveil.zoo.config` (``ZooTrainConfig``),
:mod:`~photoveil.zoo.datamodule`, :mod:`~photoveil.zoo.train` (Lightning module, ``train``),
:mod:`~photoveil.zoo.checkpoints` (``load_trained``, ``list_trained``), :mod:`~photoveil.zoo.cli`.
Kept free of imports so ``photoveil --help`` does not load torch.
"""
