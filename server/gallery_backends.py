"""Which gallery store a server uses: ``open_gallery(config)``.

``gallery_url`` set (``postgresql://...``): the PostgreSQL store replicas share; else the
SQLite file ``gallery_path`` (default ``<cache>/gallery.sqlite3``). Both take the search
settings of ``[gallery_index]``.
"""
from __future__ import annotations

from photoveil.paths import cache_dir
from photoveil.server.config import ServerConfig
from photoveil.server.gallery import GalleryStore, SQLiteGallery


def open_gallery(config: ServerConfig) -> GalleryStore:
    if config.gallery_url:
        from photoveil.server.gallery_pg import PostgresGallery

        return PostgresGallery(config.gallery_url, pool_size=config.gallery_pool_size, index=config.gallery_index)
    path = config.gallery_path or str(cache_dir() / "gallery.sqlite3")
    return SQLiteGallery(path, synchronous=config.gallery_synchronous, index=config.gallery_index)
