"""Immutable records, as ``collections.namedtuple`` makes them, without
importing :mod:`collections`: that import costs ~2 ms of every action (it
defines OrderedDict, Counter, ChainMap and the User* classes, none of which
the agent uses), a tenth of the monitor.

A record is a tuple subclass: built by position or keyword, its fields read
by name, compared and hashed as a tuple, copied with ``_replace``, and shown
by ``repr`` exactly as a namedtuple of the same name and fields (the memo
keys of :mod:`clusterip.memo` are such reprs; tests/unit/test_record.py
holds both to the same behaviour).
"""


def record(name, fields):
    """A tuple subclass named ``name`` with the space-separated ``fields``."""
    fields = tuple(fields.split()) if isinstance(fields, str) else tuple(fields)
    signature = "%s(%s)" % (name, ", ".join(fields))

    def __new__(cls, *args, **kwargs):
        if kwargs:
            try:
                args += tuple(kwargs.pop(field) for field in fields[len(args):])
            except KeyError as missing:
                raise TypeError("%s: missing %s" % (signature, missing)) from None
        if kwargs or len(args) != len(fields):
            raise TypeError("%s: got %d positional and unexpected %s"
                            % (signature, len(args), sorted(kwargs) or "none"))
        return tuple.__new__(cls, args)

    def _replace(self, **changes):
        replaced = type(self)(*(changes.pop(field, value)
                                for field, value in zip(fields, self, strict=True)))
        if changes:
            raise TypeError("%s has no field %s" % (signature, ", ".join(sorted(changes))))
        return replaced

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__,
                           ", ".join("%s=%r" % pair for pair in zip(fields, self, strict=True)))

    namespace = {"__slots__": (), "__doc__": signature, "_fields": fields, "__new__": __new__,
                 "_replace": _replace, "__repr__": __repr__,
                 "__getnewargs__": lambda self: tuple(self)}  # copy and pickle by position
    for index, field in enumerate(fields):
        namespace[field] = property(lambda self, index=index: self[index])
    return type(name, (tuple,), namespace)
