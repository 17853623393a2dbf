"""One folder per sensor: its codec, options, lifecycle commands, emulator, test vectors and
README. :func:`edge.plugins.sensors` discovers every folder here that defines ``SENSOR``."""
