"""A peer: shares a folder over gRPC, downloads from other peers, a local control API."""
