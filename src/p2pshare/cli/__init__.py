"""The p2pshare command line."""
