"""Datasets: face identity folders (:mod:`.faces`), classification sets (:mod:`.classification`)
and batched training augmentation (:mod:`.augment`).

Kept free of imports so importing one loader does not pull in the other's dependencies.
"""
