"""p2pshare: a peer-to-peer file-sharing network."""

from importlib.metadata import PackageNotFoundError, version

from p2pshare.errors import P2PShareError

try:
    __version__ = version("p2pshare")  # one source of truth: pyproject.toml, via the metadata
except PackageNotFoundError:  # a source tree run without being installed
    __version__ = "0+unknown"
__all__ = ["P2PShareError", "__version__"]
