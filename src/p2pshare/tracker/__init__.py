"""The tracker: registry of live peers and their files, name search, REST API."""
