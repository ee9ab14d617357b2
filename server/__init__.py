"""The provider's gRPC server: recognition (images, split features, gallery) and artifacts.

Modules: :mod:`.config` (``ServerConfig``, ``load_config``), :mod:`.model_host`
(``ModelHost``, ``BatchKey``), :mod:`.batching` (``DynamicBatcher``), :mod:`.recognition`
(``RecognitionPlane``: the domain logic below the servicer), :mod:`.gallery`
(``GalleryStore``, ``SQLiteGallery``), :mod:`.gallery_pg` (``PostgresGallery``),
:mod:`.gallery_backends` (``open_gallery``), :mod:`.vector_index` (``GalleryIndex``: FAISS /
exact search), :mod:`.gallery_bench` + :mod:`.gallery_cli` (``photoveil gallery bench``),
:mod:`.artifacts` (``ArtifactStore``),
:mod:`.servicer` (proto <-> domain), :mod:`.interceptors`, :mod:`.status` (the one
exception -> status mapping), :mod:`.health` (``wait_serving``), :mod:`.tiny_models` (the
``tiny`` model source), :mod:`.app` (``build_server``, ``serve``), :mod:`.cli`
(``photoveil serve``); :mod:`.testing` holds test fixtures only.
Kept free of imports so ``photoveil --help`` does not load grpc or torch.
"""
