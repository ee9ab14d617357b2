"""Import TensorFlow.js models (graph models and weights manifests) as PyTorch modules."""
from photoveil.tfjs.graph import GraphProgram, TFJSGraph, load_graph_model
from photoveil.tfjs.weights_manifest import load_weights

__all__ = ["GraphProgram", "TFJSGraph", "load_graph_model", "load_weights"]
