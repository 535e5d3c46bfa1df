"""p2pshare: a peer-to-peer file-sharing network."""

from p2pshare.errors import P2PShareError

__version__ = "0.1.0"
__all__ = ["P2PShareError", "__version__"]
