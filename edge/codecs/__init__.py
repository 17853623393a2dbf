"""Pure sensor codecs: bytes in, readings (or a counted reason for none) out.

One module per sensor. No I/O, no clock, no config objects. Each module exposes a
``DESCRIPTOR`` (see :mod:`edge.codecs.base`) that is registered in :data:`REGISTRY`.
"""

from edge.codecs.base import REGISTRY, SensorDescriptor, descriptor, register

__all__ = ["REGISTRY", "SensorDescriptor", "descriptor", "register"]
