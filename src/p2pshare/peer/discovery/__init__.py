"""Discovery: the tracker session, searches across every source, and finding the
providers of a content id."""
