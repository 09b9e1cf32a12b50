"""The A2A 1.0 protocol buffers: the spec's ``a2a.proto`` and the Python code made from it.

``a2a.proto`` is the normative definition copied verbatim from the A2A 1.0.1 specification.
``a2a_pb2.py`` / ``a2a_pb2.pyi`` are generated from it by ``scripts/gen_a2a_proto.py`` (do not
edit them by hand). The messages live in a descriptor pool of their own (:mod:`.pool`), so this
package and the official a2a-sdk (which registers the same ``lf.a2a.v1`` names in protobuf's
default pool) can be imported in one process. Nothing here imports grpc.
"""
