"""The descriptor pool that holds our ``lf.a2a.v1`` messages, apart from protobuf's default.

The official a2a-sdk registers its own build of ``a2a.proto`` (same message names, different
bytes) in the default pool, and a pool refuses a second, different definition of a name. So the
generated ``a2a_pb2`` adds its file here instead, after the files it imports (``google/api/*``
and the well-known types), which are copied over from the default pool.
"""

from __future__ import annotations

from google.api import annotations_pb2, client_pb2, field_behavior_pb2
from google.protobuf import descriptor_pool, empty_pb2, struct_pb2, timestamp_pb2

POOL = descriptor_pool.DescriptorPool()


def _add(file: object, added: set[str]) -> None:
    """Add ``file`` (a FileDescriptor) to :data:`POOL` after everything it imports."""
    name = str(getattr(file, "name"))  # noqa: B009 (protobuf descriptors are untyped here)
    if name in added:
        return
    for dependency in getattr(file, "dependencies"):  # noqa: B009
        _add(dependency, added)
    POOL.AddSerializedFile(getattr(file, "serialized_pb"))  # noqa: B009
    added.add(name)


_ADDED: set[str] = set()
for _module in (
    annotations_pb2,
    client_pb2,
    field_behavior_pb2,
    empty_pb2,
    struct_pb2,
    timestamp_pb2,
):
    _add(_module.DESCRIPTOR, _ADDED)
