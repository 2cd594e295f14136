"""Clients, server, strategies and the executors that host clients (in-process or Ray)."""
