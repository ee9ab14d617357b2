"""Network definitions shared by client, server, export and training."""
from photoveil.nets.unet import UNetGenerator, count_parameters, load_generator, save_generator

__all__ = ["UNetGenerator", "count_parameters", "load_generator", "save_generator"]
