"""The provider's gRPC server: recognition (images, split features, gallery) and artifacts.

Modules: :mod:`.config` (``ServerConfig``, ``load_config``), :mod:`.model_host`
(``ModelHost``), :mod:`.batching` (``DynamicBatcher``), :mod:`.gallery`
(``GalleryStore``, ``SQLiteGallery``), :mod:`.artifacts` (``ArtifactStore``),
:mod:`.servicer`, :mod:`.interceptors`, :mod:`.status` (the one exception -> status
mapping), :mod:`.app` (``build_server``, ``serve``), :mod:`.cli` (``photoveil serve``).
Kept free of imports so ``photoveil --help`` does not load grpc or torch.
"""
