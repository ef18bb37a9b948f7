"""Functions that run on the HPC node (Globus Compute tasks).

They import inside their bodies and take and return plain data, so the same code runs in a
local process pool, in globus-compute-endpoint's engines and on a real endpoint. This package
never imports ``stream_langchain``: an HPC node needs only ``relay`` and ``httpx``.

Example:
    >>> from hpc_functions import batch_chat, stream_chat
    >>> stream_chat.__module__
    'hpc_functions.chat'
"""

from __future__ import annotations

from hpc_functions.chat import batch_chat, ping, stream_chat

__all__ = ["batch_chat", "ping", "stream_chat"]
