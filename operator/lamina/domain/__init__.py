"""Pure decisions.  Nothing here performs I/O, reads a clock or imports kopf.

Each module takes what the handlers observed (specs, statuses of related objects, the time)
and returns what should be true: conditions, lineage, layer usage.  The handlers then write the
difference.  Because the functions are deterministic, writing their output again changes
nothing, which is what keeps the level-triggered loops from spinning.
"""
