"""sluice's composition root: the ``sluice`` command line and the local stack.

The product lives in the top-level packages ``features``, ``streams``, ``online_store``,
``offline_store`` and ``monitors``; this package only wires them to a command line.
"""

__all__: list[str] = []
