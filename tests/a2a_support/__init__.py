"""Test support for the A2A server tests: a scripted echo agent, an in-loop uvicorn runner,
a raw JSON-RPC/REST helper over httpx, and a node script run as a subprocess."""
