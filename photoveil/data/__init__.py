"""Datasets: face identity folders (:mod:`.faces`) and classification sets (:mod:`.classification`).

Kept free of imports so importing one loader does not pull in the other's dependencies.
"""
