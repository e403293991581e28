"""Hardware experiments (Figs. 3, 6-13, Table I): the HB model's grids, mappings, sensitivity,
tables and drawings, one module per concern (``grid``, ``mapping``, ``sensitivity``, ``table``,
``drawing``; ``scheduling`` for the scheduler study). Import the modules themselves, e.g.
``from h2eal_core.experiments.hardware import grid``; this file imports nothing.
"""
