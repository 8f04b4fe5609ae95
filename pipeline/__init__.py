"""cocolake: COCO-format annotations as a columnar warehouse.

Stages, one module each: ``config`` → ``sources`` → ``split`` → ``flatten`` (+ ``masks``)
→ ``warehouse``; ``graph`` wires them into a Dask graph and ``runner`` computes it.
``views`` / ``export`` read the warehouse back. ``cli`` is the only place that prints.
"""

__version__ = "0.1.0"
