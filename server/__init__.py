"""The provider's gRPC server: recognition (images, split features, gallery) and artifacts.

Modules: :mod:`.config` (``ServerConfig``, ``load_config``), :mod:`.model_host`
(``ModelHost``, ``BatchKey``), :mod:`.batching` (``DynamicBatcher``), :mod:`.recognition`
(``RecognitionPlane``: the domain logic below the servicer), :mod:`.gallery`
(``GalleryStore``, ``SQLiteGallery``), :mod:`.artifacts` (``ArtifactStore``),
:mod:`.servicer` (proto <-> domain), :mod:`.interceptors`, :mod:`.status` (the one
exception -> status mapping), :mod:`.health` (``wait_serving``), :mod:`.tiny_models` (the
``tiny`` model source), :mod:`.app` (``build_server``, ``serve``), :mod:`.cli`
(``photoveil serve``); :mod:`.testing` holds test fixtures only.
Kept free of imports so ``photoveil --help`` does not load grpc or torch.
"""
