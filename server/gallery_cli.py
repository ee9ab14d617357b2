"""``photoveil gallery bench``: vector search of the gallery, per store and index (see gallery_bench)."""
from __future__ import annotations

import argparse


def _ints(value: str, flag: str) -> list[int]:
    from photoveil.errors import InvalidInput

    try:
        return [int(float(v)) for v in value.split(",") if v.strip()]
    except ValueError:
        raise InvalidInput(f"{flag} {value!r} must be a comma list of integers (1e6 is accepted)") from None


def _words(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def register(sub) -> None:
    from photoveil.server import gallery_bench
    from photoveil.server.config import GalleryIndexConfig

    parser = sub.add_parser("gallery", help="the provider's face gallery: search benchmark")
    gsub = parser.add_subparsers(dest="gallery_command", metavar="ACTION")
    gsub.required = True
    p = gsub.add_parser("bench", help="Identify p50/p99, throughput, recall@1 vs exact and memory per store/index",
                        description=gallery_bench.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default="sqlite", help="comma list of sqlite | postgres [sqlite]")
    p.add_argument("--gallery-url", default="", help="postgresql://... database for the postgres backend")
    p.add_argument("--sizes", default="10000,100000,1000000", help="comma list of gallery entries [1e4,1e5,1e6]")
    p.add_argument("--dim", type=int, default=128, help="embedding dimension [128]")
    p.add_argument("--indexes", default="exact,flat,ivf,hnsw", help="comma list of exact | flat | ivf | hnsw [all]")
    p.add_argument("--nprobe", default=str(GalleryIndexConfig.nprobe),
                   help=f"comma list of IVF lists scanned per query [{GalleryIndexConfig.nprobe}]")
    p.add_argument("--ef-search", default=str(GalleryIndexConfig.ef_search),
                   help=f"comma list of HNSW candidates per query [{GalleryIndexConfig.ef_search}]")
    p.add_argument("--queries", type=int, default=1000, help="single-query Identify calls per setting [1000]")
    p.add_argument("--embeddings", choices=("synthetic", "lfw"), default="synthetic",
                   help="synthetic unit vectors at each --sizes, or real embeddings of the LFW images [synthetic]")
    p.add_argument("--model", default="faceapi-resnet34", help="recognizer embedding LFW (--embeddings lfw)")
    p.add_argument("--lfw", default=None, help="LFW root for --embeddings lfw (default: $PHOTOVEIL_LFW or shared)")
    p.add_argument("--lfw-limit", type=int, default=0, help="seeded sample of LFW images (0 = all) [0]")
    p.add_argument("--cache-dir", default=None, help="face models and the embedding cache")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON record per line")
    p.add_argument("--out", help="folder for gallery_bench.json and gallery_bench.md")
    p.set_defaults(func=_bench)


def _bench(args) -> int:
    import json
    import sys

    from photoveil.errors import InvalidInput
    from photoveil.server.gallery_bench import check_args, lfw_set, run_bench, table, write

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    backends, sizes, kinds = _words(args.backends), _ints(args.sizes, "--sizes"), _words(args.indexes)
    nprobes, efs = _ints(args.nprobe, "--nprobe"), _ints(args.ef_search, "--ef-search")
    check_args(backends, sizes, args.dim, kinds, nprobes, args.queries, args.gallery_url, efs)
    real = None
    if args.embeddings == "lfw":  # checked before any model loads too
        from photoveil.facemodels import registry

        if registry.get_spec(args.model).role != "recognizer":
            raise InvalidInput(f"--model {args.model!r} is not a face recognizer")
        if args.lfw_limit < 0:
            raise InvalidInput(f"--lfw-limit must be >= 0, got {args.lfw_limit}")
        real = lfw_set(args.model, args.lfw, args.queries, args.seed, args.cache_dir, args.lfw_limit, log)
    records = run_bench(backends, sizes, args.dim, kinds, nprobes, args.queries, args.gallery_url, args.seed,
                        log=log, efs=efs, real=real)
    if args.json:
        for r in records:
            print(json.dumps(r))
    else:
        print(table(records))
    if args.out:
        write(records, args.out)
    return 0
