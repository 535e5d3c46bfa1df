"""The pure core: plain data and functions, no sockets, no asyncio, no clock.

Adapters (gRPC, FastAPI, SQLite, the disk) wrap it; nothing here imports them.
"""
