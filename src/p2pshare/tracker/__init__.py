"""The tracker (bootstrap server): registry of live peers and their files, name search,
REST API.

``models`` holds the API messages (shared with peers), ``registry`` the store
(``Registry`` protocol, ``SqliteRegistry``), ``app`` the FastAPI app, ``server`` the
process, ``client`` the async ``TrackerClient`` that peers and the CLI use.
"""
