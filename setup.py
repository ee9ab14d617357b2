"""Package layout: the generic top-level folders are installed under ``photoveil.``.

``client``, ``server``, ``export`` and ``generator_training`` would collide with other
distributions in site-packages, so each folder becomes ``photoveil.<folder>`` (all other
metadata lives in pyproject.toml).
"""
from setuptools import find_packages, setup

MAPPED = ("client", "server", "export", "generator_training")

packages = find_packages(include=["photoveil", "photoveil.*"])
package_dir = {"photoveil": "photoveil"}
for folder in MAPPED:
    package_dir[f"photoveil.{folder}"] = folder
    packages.append(f"photoveil.{folder}")
    packages += [f"photoveil.{folder}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir=package_dir)
