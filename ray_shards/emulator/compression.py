"""Gateway transport compression: ``zlib-stream`` always, ``zstd-stream`` when a zstd module exists."""

from __future__ import annotations

import importlib
import typing
import zlib

__all__ = ["FrameEncoder", "make_encoder", "supported_compressions"]


class FrameEncoder(typing.Protocol):
    """Compresses the payloads of one connection, in order, each flushed into its own frame."""

    def encode(self, frame: str) -> bytes:
        """Return the compressed bytes of one payload (sent as one BINARY frame)."""
        ...


class _ZlibStream:
    __slots__ = ("_compressor",)

    def __init__(self) -> None:
        self._compressor = zlib.compressobj()

    def encode(self, frame: str) -> bytes:
        return self._compressor.compress(frame.encode()) + self._compressor.flush(zlib.Z_SYNC_FLUSH)


class _ZstdStream:
    __slots__ = ("_compressor", "_flush_block")

    def __init__(self, module: typing.Any) -> None:
        self._compressor = module.ZstdCompressor()
        self._flush_block = module.ZstdCompressor.FLUSH_BLOCK

    def encode(self, frame: str) -> bytes:
        return bytes(self._compressor.compress(frame.encode(), mode=self._flush_block))


def _zstd_module() -> typing.Any | None:
    for name in ("compression.zstd", "backports.zstd"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def supported_compressions() -> frozenset[str]:
    """Return the ``compress`` query values the gateway accepts."""
    if _zstd_module() is not None:
        return frozenset({"zlib-stream", "zstd-stream"})
    return frozenset({"zlib-stream"})


def make_encoder(name: str | None) -> FrameEncoder | None:
    """Return a fresh encoder for one connection.

    Parameters
    ----------
    name
        ``"zlib-stream"``, ``"zstd-stream"`` or `None` (plain TEXT frames).

    Returns
    -------
    FrameEncoder | None
        The encoder, or `None` for no compression.

    Raises
    ------
    ValueError
        For an unsupported compression.
    """
    if name is None:
        return None
    if name == "zlib-stream":
        return _ZlibStream()
    if name == "zstd-stream":
        module = _zstd_module()
        if module is not None:
            return _ZstdStream(module)
    raise ValueError(f"unsupported compression {name!r}")
