"""Overlay: neighbours, searches that travel peer to peer, publish/subscribe."""
