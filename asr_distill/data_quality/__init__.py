"""Data-quality facts shared by every check: named bounds and how per-partition results combine.

* :mod:`.bounds`: the :class:`Bounds` type; each stage's schema module defines its bounds with it.
* :mod:`.named`: the values the YAML checks may reference as ``{{ name }}`` (bounds, reason lists),
  read from the stage schema modules, so that a check file never copies a number or a list.
* :mod:`.combine`: one check's per-partition findings combined into the result of a multi-partition
  run (used by the declarative checks, the Python asset checks and the pandera schema check).

Nothing here imports Dagster.
"""
