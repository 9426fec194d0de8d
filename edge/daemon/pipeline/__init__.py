"""The daemon's frame path: capture and processing threads, their queue, one frame's processing."""
