"""Sharing: the share folder scanned, hashed, cached and watched."""
