"""Folder sync: the version of every file this peer shares or syncs, and the
subscriptions that keep folders in step with their publishers (issue 16)."""
